"""What a user types reaches Python as typed, or stops Make in one line: SET with spaces, quotes and `$`,
booleans, NPROC, a run another command is writing, an artifact root that cannot be written, a
`clean-run` that would have to guess. Each case runs `make` itself."""

import json
import os
import subprocess

import pytest

from lib.pipeline.artifacts import RunPaths
from lib.pipeline.lock import RunLock
from tests.helpers import REPO

pytestmark = pytest.mark.skipif(not (REPO / ".venv" / ".installed").exists(), reason="needs `make venv`")


def make(tmp_path, *args, artifacts=None):
    env = {key: value for key, value in os.environ.items() if key not in ("MAKEFLAGS", "SET")}
    return subprocess.run(["make", "--no-print-directory", *args, f"ARTIFACTS={artifacts or tmp_path / 'artifacts'}"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def one_error(done) -> str:
    """The one line a failed call prints (Make's own `*** ... Stop.` or the stage's `Error: ...`)."""
    assert done.returncode != 0 and "Traceback" not in done.stderr, done.stderr
    lines = [line for line in done.stderr.splitlines() if "Error:" in line or "***" in line]
    assert lines and (lines[0].startswith("Error:") or len(lines) == 1), done.stderr
    return lines[0]


def pool(tmp_path) -> str:
    return f"fewshot.path={tmp_path / 'pool.jsonl'}"


def test_set_reaches_the_config_as_typed_spaces_quotes_and_dollars_included(tmp_path):
    typed = (f"{pool(tmp_path)} tokenize.system_prompt=\"You are helpful\" lora.target_modules=[q_proj, v_proj]"
             " model.revision='v$5 x'")
    done = make(tmp_path, "prep_fewshot", "PRESET=demo", "RUN=q", f"SET={typed}")
    assert done.returncode == 0, done.stderr
    run = RunPaths(tmp_path / "artifacts", "q")
    assert json.loads(run.identity.read_text())["overrides"] == [
        pool(tmp_path), "tokenize.system_prompt=You are helpful", "lora.target_modules=[q_proj, v_proj]",
        "model.revision=v$5 x"]
    config = json.loads(run.record.read_text())["config"]
    assert config["tokenize"]["system_prompt"] == "You are helpful"
    assert config["lora"]["target_modules"] == ["q_proj", "v_proj"]
    assert config["model"]["revision"] == "v$5 x"


def test_an_unclosed_quote_in_set_stops_in_one_line(tmp_path):
    done = make(tmp_path, "prep_fewshot", "PRESET=demo", "RUN=u", "SET=tokenize.system_prompt=\"You are")
    assert one_error(done).startswith("Error: SET='tokenize.system_prompt=\"You are': No closing quotation")
    assert not (tmp_path / "artifacts" / "run_u" / "run.json").exists()


@pytest.mark.parametrize(("typed", "smoke"), [("false", False), ("no", False), ("0", False), ("true", True),
                                               ("YES", True), ("1", True)])
def test_smoke_is_read_as_the_boolean_typed(tmp_path, typed, smoke):
    done = make(tmp_path, "prep_fewshot", "PRESET=demo", "RUN=b", f"SMOKE={typed}", f"SET={pool(tmp_path)}")
    assert done.returncode == 0, done.stderr
    assert json.loads(RunPaths(tmp_path / "artifacts", "b").identity.read_text())["smoke"] is smoke


@pytest.mark.parametrize(("variable", "value", "message"), [
    ("SMOKE", "maybe", "SMOKE=maybe: expected 1, true, yes or on, or 0, false, no or off"),
    ("RECONFIGURE", "2", "RECONFIGURE=2: expected 1, true, yes or on, or 0, false, no or off"),
    ("NPROC", "0", "NPROC=0: the number of processes, a whole number from 1 (e.g. NPROC=4)"),
    ("NPROC", "two", "NPROC=two: the number of processes, a whole number from 1 (e.g. NPROC=4)"),
])
def test_a_value_make_cannot_read_stops_it_in_one_line_before_anything_runs(tmp_path, variable, value, message):
    done = make(tmp_path, "prep_fewshot", "PRESET=demo", f"{variable}={value}")
    (line,) = done.stderr.strip().splitlines()
    assert done.returncode != 0 and line.endswith(f"*** {message}.  Stop.")
    assert not (tmp_path / "artifacts").exists()


def test_a_run_another_command_is_writing_stops_a_second_one_in_one_line_and_it_writes_nothing(tmp_path):
    run = RunPaths(tmp_path / "artifacts", "l")
    with RunLock(run.lock, "l"):  # this test process is "the other command"
        done = make(tmp_path, "prep_fewshot", "PRESET=demo", "RUN=l", f"SET={pool(tmp_path)}")
    line = one_error(done)
    assert line.startswith("Error: run 'l' is being written by pid ") and f"pid {os.getpid()} (" in line
    assert "wait for it to end" in line
    assert sorted(p.name for p in run.folder.iterdir()) == [".lock"]  # no record, no pool, nothing half-written


@pytest.mark.parametrize("target", ["check", "prep_fewshot"])
def test_an_artifact_root_that_cannot_be_written_is_one_line(tmp_path, target):
    a_file = tmp_path / "not-a-folder"
    a_file.write_text("x")
    for artifacts, says in [(a_file / "sub", "is a file, not a folder"), ("/proc/gsm8k-toolkit", "nothing can be")]:
        done = make(tmp_path, target, "PRESET=demo", f"SET={pool(tmp_path)}", artifacts=artifacts)
        line = one_error(done)
        assert line.startswith(f"Error: ARTIFACTS {artifacts}: ") and says in line, line


def test_clean_run_never_guesses_which_run_to_delete(tmp_path):
    assert make(tmp_path, "prep_fewshot", "PRESET=demo", f"SET={pool(tmp_path)}").returncode == 0  # run "demo"
    refused = make(tmp_path, "clean-run")
    assert one_error(refused) == ("Error: clean-run deletes one run's work and never guesses which: name it, e.g."
                                  " make clean-run RUN=demo-smoke")
    assert (tmp_path / "artifacts" / "run_demo" / "fewshot.jsonl").is_file()
    assert make(tmp_path, "clean-run", "RUN=demo").returncode == 0
    assert not (tmp_path / "artifacts" / "run_demo").exists()


def test_sweep_of_a_run_that_does_not_exist_fails_and_says_so_once(tmp_path):
    done = make(tmp_path, "sweep", "RUN=nope")
    assert done.returncode != 0
    assert [line for line in done.stderr.splitlines() if line.startswith("Error:")] == [
        "Error: run 'nope' does not exist yet (no {}/run.json): start it with `make <target> RUN=nope"
        " PRESET=<preset>`, or name its preset (PRESET=..., --preset)".format(tmp_path / "artifacts" / "run_nope")]
