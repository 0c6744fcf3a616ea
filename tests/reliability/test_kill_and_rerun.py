"""SIGKILL a stage mid-run, rerun it: no lost or doubled rows, the same bytes as an uninterrupted run."""

import fcntl
import json
import os
import subprocess
import sys
import time

import pytest
from safetensors.torch import load_file

from tests.helpers import PIN_CPU, PRESET_DIR, REPO, kill_when, write_jsonl

PROMPTS = [{"id": f"p{i}", "prompt": f"Question number {i}: how do I stay safe online?", "hazard": "prv",
            "persona": "normal"} for i in range(6)]


def lines(path) -> int:
    return len(path.read_text().splitlines()) if path.is_file() else 0


@pytest.fixture
def base_args(tmp_path, models_dir, gsm8k_files):
    train_file, test_file = gsm8k_files
    write_jsonl(tmp_path / "ailuminate.jsonl", PROMPTS)
    return ["--preset", str(PRESET_DIR / "demo.yaml"), "--artifacts", str(tmp_path / "artifacts"),
            "--models-dir", str(models_dir), "--set", f"data.gsm8k_train={train_file}",
            "--set", f"data.gsm8k_test={test_file}", "--set", f"data.ailuminate={tmp_path / 'ailuminate.jsonl'}",
            "--set", f"fewshot.path={tmp_path / 'pool.jsonl'}", "--set", "eval.max_new_tokens=12", "--set", PIN_CPU,
            "--set", "eval.batch_size=2", "--set", "eval.chunk_size=2", "--set", "safety.max_new_tokens=4"]


def stage_command(stage: str, args: list[str], run: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", f"stages.{stage}", *args, "--run", run, *extra]


def run_stage(stage: str, args, run, *extra):
    done = subprocess.run(stage_command(stage, args, run, *extra), cwd=REPO, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.mark.slow
def test_infer_ailuminate_and_score_safety_survive_a_kill(base_args, tmp_path):
    """The rerun after the kill lowers the batch and chunk sizes (runtime keys: they change no answer),
    and still keeps the rows the killed call wrote."""
    artifacts = tmp_path / "artifacts"
    smaller = ["--set", "eval.batch_size=1", "--set", "eval.chunk_size=1"]
    for run in ("whole", "cut"):
        run_dir = artifacts / f"run_{run}"
        partial = run_dir / "partial_ailuminate_base" / "outputs.rank0.jsonl"
        if run == "cut":
            kill_when(stage_command("infer_ailuminate", base_args, run, "--base-only"),
                      lambda partial=partial: lines(partial) >= 2)
            assert not (artifacts / f"ailuminate_preds_{run}_base.jsonl").exists()
            run_stage("infer_ailuminate", base_args, run, "--base-only", *smaller)
            metrics = json.loads((artifacts / f"ailuminate_metrics_{run}_base.json").read_text())
            assert metrics["engine"]["prompts"] <= len(PROMPTS) - 2  # the killed call's rows were kept
        else:
            run_stage("infer_ailuminate", base_args, run, "--base-only")

        judge_partial = run_dir / "partial_safety_base" / "outputs.rank0.jsonl"
        if run == "cut":
            kill_when(stage_command("score_safety", base_args, run, "--base-only"),
                      lambda judge_partial=judge_partial: lines(judge_partial) >= 2)
            assert not (artifacts / f"ailuminate_safety_{run}_base.jsonl").exists()
        run_stage("score_safety", base_args, run, "--base-only")

    for name in ("ailuminate_preds_{}_base.jsonl", "ailuminate_safety_{}_base.jsonl"):
        whole, cut = ((artifacts / name.format(run)).read_bytes() for run in ("whole", "cut"))
        assert cut == whole
        assert [json.loads(line)["id"] for line in cut.decode().splitlines()] == [p["id"] for p in PROMPTS]


@pytest.mark.slow
def test_train_survives_a_kill_and_ends_with_the_same_adapter(train_run, tmp_path):
    artifacts = tmp_path / "artifacts"
    train_run.prepared("whole")
    train_run.prepared("cut")
    command = [sys.executable, "-m", "stages.train", *train_run.common]
    subprocess.run([*command, "--run", "whole"], cwd=REPO, check=True, capture_output=True, timeout=600)
    checkpoint = artifacts / "run_cut" / "checkpoints" / "checkpoint-2" / "trainer_state.json"
    kill_when([*command, "--run", "cut"], checkpoint.is_file)
    assert not (artifacts / "run_cut" / "adapter" / "training_complete.json").exists()
    done = subprocess.run([*command, "--run", "cut"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and "resuming from checkpoint-" in done.stdout
    steps = [json.loads(line)["step"] for line in (artifacts / "run_cut" / "train_log.jsonl").read_text().splitlines()
             if "loss" in json.loads(line)]
    assert steps == sorted(set(steps)) == list(range(1, 7))  # every step once
    whole = load_file(artifacts / "run_whole" / "adapter" / "adapter_model.safetensors")
    cut = load_file(artifacts / "run_cut" / "adapter" / "adapter_model.safetensors")
    for name in whole:
        assert (whole[name] - cut[name]).abs().max() < 1e-4


@pytest.mark.slow
def test_refine_survives_a_kill_with_the_same_bytes(base_args, tmp_path):
    artifacts = tmp_path / "artifacts"
    args = [*base_args, "--set", "refine.question_limit=4", "--set", "refine.samples_per_question=2",
            "--set", "refine.max_new_tokens=24", "--set", "refine.batch_size=2", "--set", "refine.chunk_size=2"]
    for run in ("whole", "cut"):
        run_stage("prep_fewshot", args, run)
        partial = artifacts / f"run_{run}" / "partial_refine" / "outputs.rank0.jsonl"
        if run == "cut":
            kill_when(stage_command("refine", args, run), lambda partial=partial: lines(partial) >= 2)
            assert not (artifacts / f"run_{run}" / "gsm8k_train_self-instruct.refine.json").exists()
        run_stage("refine", args, run)
    whole, cut = ((artifacts / f"run_{run}" / "gsm8k_train_self-instruct.jsonl").read_bytes()
                  for run in ("whole", "cut"))
    assert cut == whole and whole.count(b'"source": "gsm8k"') == 4


@pytest.mark.slow
def test_two_make_calls_on_one_run_one_works_the_other_stops_in_one_line(tmp_path, tiny_model_dir, gsm8k_files):
    """Two `make train` on one run at once (the second while the first trains): the second stops with one
    line naming the first and writes nothing; the run ends as one run (one adapter, its record unchanged)."""
    train_file, _ = gsm8k_files
    artifacts = tmp_path / "artifacts"
    typed = (f"model.base={tiny_model_dir} data.gsm8k_train={train_file} fewshot.path={tmp_path / 'pool.jsonl'}"
             f" train.epochs=30 train.per_device_batch_size=2 quant.compute_dtype=float32 {PIN_CPU}")
    command = ["make", "--no-print-directory", "train", "PRESET=demo", "RUN=twice", f"ARTIFACTS={artifacts}",
               f"SET={typed}"]
    env = {key: value for key, value in os.environ.items() if key != "MAKEFLAGS"}
    lock = artifacts / "run_twice" / ".lock"

    def training_holds_the_lock() -> bool:
        if not lock.is_file() or "stages.train" not in lock.read_text():
            return False
        with lock.open() as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(handle, fcntl.LOCK_UN)
            return False

    first = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not training_holds_the_lock() and first.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    assert first.poll() is None, "the first call ended before the second could start"
    record = (artifacts / "run_twice" / "run.json").read_bytes()
    second = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    out, err = first.communicate(timeout=600)
    assert first.returncode == 0, err[-2000:]
    assert second.returncode != 0 and "Traceback" not in second.stderr
    errors = [line for line in second.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and errors[0].startswith("Error: run 'twice' is being written by pid ")
    assert "stages.train" in errors[0]
    assert (artifacts / "run_twice" / "run.json").read_bytes() == record
    assert out.count("adapter written") == 1 and not (artifacts / "run_twice" / "superseded").exists()
