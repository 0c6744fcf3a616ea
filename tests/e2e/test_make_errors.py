"""What a new user sees when a make call is wrong: one `Error:` line, no traceback, nothing run."""

import os
import subprocess

import pytest

from tests.helpers import REPO

pytestmark = pytest.mark.skipif(not (REPO / ".venv" / ".installed").exists(), reason="needs `make venv`")


def _make(tmp_path, *args, dry=False):
    env = {key: value for key, value in os.environ.items() if key != "MAKEFLAGS"}
    return subprocess.run(["make", "--no-print-directory", *(["-n"] if dry else []), *args,
                           f"ARTIFACTS={tmp_path / 'artifacts'}"], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)


def _error_lines(done) -> list[str]:
    assert done.returncode != 0 and "Traceback" not in done.stderr, done.stderr
    return [line for line in done.stderr.splitlines() if line.startswith("Error:")]


@pytest.mark.parametrize("recorded", [False, True], ids=["new-run", "existing-run"])
def test_a_config_error_is_printed_once_and_blames_the_override(tmp_path, recorded):
    if recorded:
        assert _make(tmp_path, "prep_fewshot", "PRESET=demo", "RUN=r", "SET=train.epochs=1").returncode == 0
    # A fresh stage_inputs.mk is made first, so Make restarts (as after any code change) before the error.
    done = _make(tmp_path, "tokenize", "PRESET=demo", "RUN=r", "SET=train.learning_rate=0",
                 f"STAGE_INPUTS_MK={tmp_path / 'stage_inputs.mk'}")
    assert _error_lines(done) == ["Error: override 'train.learning_rate=0': key 'train.learning_rate' must be > 0,"
                                  " got 0.0"]
    assert not (tmp_path / "artifacts" / "run_r" / "train_tokenized.jsonl").exists()  # nothing ran


@pytest.mark.parametrize("name", ["my run", "", "a:b", "a$b", "x/y", "-n"])
def test_a_run_name_that_is_not_a_name_stops_make_in_one_line_as_typed(tmp_path, name):
    """Before Make reads a rule: a ':' would be "multiple target patterns", and `$b` would vanish (run `a`)."""
    done = _make(tmp_path, "tokenize", f"RUN={name}")
    assert done.returncode != 0 and "warning" not in done.stderr.lower()
    (line,) = done.stderr.strip().splitlines()
    assert line.endswith(f"*** RUN={name}: a name of letters, digits, '-', '_' and '.', starting with a letter or"
                         " digit (e.g. RUN=my-run).  Stop.")
    assert not (tmp_path / "artifacts").exists()


def test_sweep_trains_only_for_a_run_that_sweeps(tmp_path):
    def stages(*args):
        done = _make(tmp_path, "sweep", *args, dry=True)
        assert done.returncode == 0, done.stderr
        return {line.split("-m stages.")[1].split()[0] for line in done.stdout.splitlines() if "-m stages." in line}

    training = {"prep_fewshot", "tokenize", "train"}
    assert not training & stages("PRESET=demo", "RUN=no-sweep")  # the demo does not sweep: nothing to train for
    assert training <= stages("PRESET=medium", "RUN=sweeps")


def test_a_rerun_that_fails_on_a_remembered_override_names_it(tmp_path):
    missing = tmp_path / "nope.jsonl"
    first = _make(tmp_path, "tokenize", "PRESET=demo", "RUN=r", f"SET=data.gsm8k_train={missing}"
                  f" fewshot.path={tmp_path / 'pool.jsonl'}")
    (line,) = _error_lines(first)
    assert str(missing) in line and "remembers" not in line  # given in this call: nothing to remind
    (line,) = _error_lines(_make(tmp_path, "tokenize", "RUN=r"))
    assert str(missing) in line and f"remembers SET=data.gsm8k_train={missing}" in line
