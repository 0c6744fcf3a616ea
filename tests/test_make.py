"""Make targets are files: unchanged stages are skipped, a changed key reruns its first reader."""

import os
import subprocess

import pytest

from conftest import REPO

pytestmark = pytest.mark.skipif(not (REPO / ".venv" / ".installed").exists(), reason="needs `make venv`")


@pytest.fixture
def make(tmp_path, models_dir, gsm8k_files):
    train, _ = gsm8k_files
    base_set = f"data.gsm8k_train={train} fewshot.path={tmp_path / 'pool.jsonl'}"
    env = {**os.environ, "MODELS_DIR": str(models_dir)}
    env.pop("MAKEFLAGS", None)

    def run(target, extra_set=""):
        args = ["make", "--no-print-directory", target, "PRESET=demo", "RUN=m",
                f"ARTIFACTS={tmp_path / 'artifacts'}", f"SET={base_set} {extra_set}".strip()]
        done = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    return run


def test_unchanged_stages_are_skipped_and_a_changed_key_reruns_only_its_readers(make, tmp_path):
    first = make("tokenize")
    assert "stages.prep_fewshot" in first and "stages.tokenize" in first
    assert (tmp_path / "artifacts" / "run_m" / "train_tokenized.jsonl").is_file()

    second = make("tokenize")
    assert "stages." not in second

    changed = make("tokenize", "tokenize.max_seq_len=64")
    assert "stages.tokenize" in changed and "stages.prep_fewshot" not in changed
    assert "truncated at 64" in changed

    unrelated = make("tokenize", "tokenize.max_seq_len=64 train.epochs=5")
    assert "stages." not in unrelated  # no stage so far reads train.*


def test_help_lists_every_target_and_variable():
    out = subprocess.run(["make", "help"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    listed = {line.split()[0] for line in out.splitlines() if line.startswith("  ")}
    targets = {"help", "venv", "test", "bench", "demo", "prep_fewshot", "tokenize", "train", "infer_gsm8k",
               "infer_ailuminate", "score_safety", "clean-run"}
    assert targets <= listed
    variables = {entry.split("=")[0] for entry in listed if "=" in entry}
    assert {"PYTHON", "PRESET", "RUN", "SET", "SMOKE", "ARTIFACTS", "NPROC", "TRAIN_ARGS"} <= variables
