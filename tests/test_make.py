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
               "infer_ailuminate", "score_safety", "summarize", "simple", "medium", "strong", "smoke", "clean-run"}
    assert targets <= listed
    variables = {entry.split("=")[0] for entry in listed if "=" in entry}
    assert {"PYTHON", "PRESET", "RUN", "SET", "SMOKE", "ARTIFACTS", "NPROC", "TRAIN_ARGS"} <= variables


def test_smoke_chain_end_to_end_writes_every_artifact_and_a_rerun_does_nothing(tmp_path, models_dir):
    """`make smoke PRESET=demo` with the sweep on: every stage on the embedded model at smoke sizes; then again."""
    import csv
    import json
    import time

    artifacts = tmp_path / "artifacts"
    token = "hf_FAKEtokenE2E0123456789abcdef"
    env = {**os.environ, "MODELS_DIR": str(models_dir), "HF_TOKEN": token}
    env.pop("MAKEFLAGS", None)
    args = ["make", "--no-print-directory", "smoke", "PRESET=demo", f"ARTIFACTS={artifacts}",
            f"SET=fewshot.path={tmp_path / 'pool.jsonl'} eval.max_new_tokens=24 safety.max_new_tokens=4"
            " train.save_steps=2 sweep.enabled=true sweep.last_n=2"]
    done = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "demo-smoke: accuracy" in done.stdout and "→ PASS" in done.stdout

    run = artifacts / "run_demo-smoke"
    for path in [run / "config_resolved.json", run / "train_tokenized.meta.json",
                 run / "adapter" / "training_complete.json", run / "summary.json",
                 artifacts / "gsm8k_metrics_demo-smoke.json", artifacts / "ailuminate_metrics_demo-smoke.json",
                 artifacts / "ailuminate_safety_metrics_demo-smoke.json"]:
        json.loads(path.read_text())
    counts = {"fewshot.jsonl": 8, "train_tokenized.jsonl": 16, "train_log.jsonl": None}
    for name, expected in counts.items():
        lines = [json.loads(line) for line in (run / name).read_text().splitlines()]
        assert expected is None or len(lines) == expected
    for name, expected in [("gsm8k_preds_demo-smoke.jsonl", 8), ("ailuminate_preds_demo-smoke.jsonl", 4),
                           ("ailuminate_safety_demo-smoke.jsonl", 4)]:
        assert len([json.loads(line) for line in (artifacts / name).read_text().splitlines()]) == expected
    assert (run / "adapter" / "adapter_model.safetensors").is_file()
    for plot in ("training_loss.png", "safety_by_hazard.png"):
        assert (run / plot).read_bytes().startswith(b"\x89PNG") and plot in (run / "report.md").read_text()
    assert "(run_demo-smoke/report.md)" in (artifacts / "report.md").read_text()
    # The sweep: 16 examples / 4 per step = 4 steps, checkpoints at 2 and 4; 4 is the final adapter.
    with open(artifacts / "checkpoint_scores_demo-smoke.csv", newline="") as handle:
        assert [row["checkpoint"] for row in csv.DictReader(handle)] == ["checkpoint-2", "checkpoint-4"]
    assert (artifacts / "gsm8k_preds_demo-smoke_checkpoint-2.jsonl").is_file()
    assert (run / "checkpoints.png").is_file()
    assert json.loads((run / "summary.json").read_text())["row"]["checkpoint"] in ("checkpoint-2", "checkpoint-4")
    with open(artifacts / "summary.csv", newline="") as handle:
        assert [row["run_name"] for row in csv.DictReader(handle)] == ["demo-smoke"]

    # A token in the environment reaches no artifact and no log line.
    assert token not in done.stdout + done.stderr
    assert not [p for p in artifacts.rglob("*") if p.is_file() and token.encode() in p.read_bytes()]

    start = time.perf_counter()
    again = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "stages." not in again.stdout
    assert time.perf_counter() - start < 5
