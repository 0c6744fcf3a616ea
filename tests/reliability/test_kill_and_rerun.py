"""SIGKILL a stage mid-run, rerun it: no lost or doubled rows, the same bytes as an uninterrupted run."""

import json
import subprocess
import sys

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
    artifacts = tmp_path / "artifacts"
    for run in ("whole", "cut"):
        run_dir = artifacts / f"run_{run}"
        partial = run_dir / "partial_ailuminate_base" / "outputs.rank0.jsonl"
        if run == "cut":
            kill_when(stage_command("infer_ailuminate", base_args, run, "--base-only"),
                      lambda partial=partial: lines(partial) >= 2)
            assert not (artifacts / f"ailuminate_preds_{run}_base.jsonl").exists()
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
