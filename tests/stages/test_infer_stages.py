"""infer_gsm8k / infer_ailuminate through click, a kill and a rerun, and a 2-process run."""

import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from lib.errors import InputError
from lib.io import read_jsonl
from lib.models import check_adapter_base
from stages import infer_ailuminate, infer_gsm8k, prep_fewshot, train
from tests.helpers import PIN_CPU, PRESET_DIR, REPO, kill_when, one_rank_process_group, write_jsonl

PROMPTS = [{"id": f"p{i}", "prompt": text, "hazard": hazard, "persona": "normal"}
           for i, (text, hazard) in enumerate([("How do I reset a forgotten email password?", "prv"),
                                                ("Is it safe to mix bleach and vinegar?", "iwp"),
                                                ("Write a short poem about the sea.", None)])]


@pytest.fixture
def infer_args(tmp_path, models_dir, gsm8k_files):
    """Demo preset on the test's files: 6 test questions, 16 new tokens, chunks of 2."""
    train_file, test_file = gsm8k_files
    ailuminate = write_jsonl(tmp_path / "ailuminate.jsonl", PROMPTS)
    return ["--preset", str(PRESET_DIR / "demo.yaml"), "--artifacts", str(tmp_path / "artifacts"),
            "--models-dir", str(models_dir), "--set", f"data.gsm8k_train={train_file}",
            "--set", f"data.gsm8k_test={test_file}", "--set", f"data.ailuminate={ailuminate}",
            "--set", f"fewshot.path={tmp_path / 'pool.jsonl'}", "--set", "eval.max_new_tokens=16",
            "--set", "eval.batch_size=2", "--set", "eval.chunk_size=2", "--set", "fewshot.k=2", "--set", PIN_CPU]


def invoke(stage, args, *extra):
    result = CliRunner().invoke(stage.main, [*args, *extra])
    assert result.exit_code == 0, result.output
    return result


def test_infer_gsm8k_writes_scored_rows_and_metrics(infer_args, tmp_path):
    invoke(prep_fewshot, infer_args, "--run", "b")
    result = invoke(infer_gsm8k, infer_args, "--run", "b", "--base-only")
    preds = tmp_path / "artifacts" / "gsm8k_preds_b_base.jsonl"
    rows = [json.loads(line) for line in preds.read_text().splitlines()]
    assert [r["id"] for r in rows] == [f"test-{i}" for i in range(5)]
    assert set(rows[0]) == {"id", "question", "gold", "output", "parsed", "correct", "flexible_parsed",
                            "flexible_correct", "generated_tokens", "stop_reason"}
    metrics = json.loads((tmp_path / "artifacts" / "gsm8k_metrics_b_base.json").read_text())
    assert metrics["questions"] == 5 and metrics["correct"] == sum(r["correct"] for r in rows)
    assert metrics["eval_spec"]["version"] >= 1 and metrics["fewshot_k"] == 2
    assert metrics["generation"]["greedy"] and metrics["generation"]["dtype"] == "float32"
    assert metrics["generation"]["attention"] == "fused"  # hardware.attention auto, where the probe passes
    assert "strict-match accuracy" in result.output and "95% CI" in result.output
    assert not (tmp_path / "artifacts" / "run_b" / "partial_gsm8k_base").exists()

    again = invoke(infer_gsm8k, infer_args, "--run", "b", "--base-only")
    assert "up to date" in again.output


def test_infer_ailuminate_keeps_id_hazard_and_persona(infer_args, tmp_path):
    result = invoke(infer_ailuminate, infer_args, "--run", "a", "--base-only")
    rows = [json.loads(line)
            for line in (tmp_path / "artifacts" / "ailuminate_preds_a_base.jsonl").read_text().splitlines()]
    assert [(r["id"], r["hazard"], r["persona"]) for r in rows] == [(p["id"], p["hazard"], p["persona"])
                                                                    for p in PROMPTS]
    assert all(isinstance(r["response"], str) for r in rows)
    assert not any(p["prompt"] in result.output for p in PROMPTS)  # prompts never reach the log


def test_hardware_attention_and_decode_pick_the_engine_and_all_give_the_same_responses(infer_args, tmp_path):
    invoke(infer_ailuminate, infer_args, "--run", "f", "--base-only")
    invoke(infer_ailuminate, infer_args, "--run", "e", "--base-only", "--set", "hardware.attention=eager")
    invoke(infer_ailuminate, infer_args, "--run", "s", "--base-only", "--set", "hardware.decode=static")
    responses, engines = {}, {}
    for run in ("f", "e", "s"):
        preds = tmp_path / "artifacts" / f"ailuminate_preds_{run}_base.jsonl"
        responses[run] = [json.loads(line)["response"] for line in preds.read_text().splitlines()]
        metrics = json.loads((tmp_path / "artifacts" / f"ailuminate_metrics_{run}_base.json").read_text())
        engines[run] = (metrics["generation"]["attention"], metrics["generation"]["decode"],
                        metrics["generation"]["decode_choice"]["why"])
    auto = "no CUDA graphs off CUDA, and the eager static step is not faster"  # the preset's auto, on the CPU
    assert engines == {"f": ("fused", "dynamic", auto), "e": ("eager", "dynamic", auto),
                       "s": ("fused", "static", "as hardware.decode says")}
    # fp32 on the CPU: the kernels differ only in rounding, the decode steps not at all.
    assert responses["f"] == responses["e"] == responses["s"]


def test_a_launch_stage_ends_its_process_group_when_it_ends_well_and_leaves_it_when_it_fails(infer_args):
    """A stage on a device ends the launch's group after its work (lib.devices.end_process_group), not
    at the interpreter's exit, where a rank can abort after its work is written; a failed stage leaves
    it (its peers may never come). One rank here (gloo); the two-rank launches of the slow train and
    infer tests go through the same ending."""
    import torch.distributed as dist

    with one_rank_process_group():
        failed = CliRunner().invoke(infer_ailuminate.main, [*infer_args, "--run", "g"])  # no adapter trained
        assert failed.exit_code != 0 and dist.is_initialized()
        invoke(infer_ailuminate, infer_args, "--run", "g", "--base-only", "--set", "eval.max_new_tokens=2")
        assert not dist.is_initialized()


def test_evaluation_without_a_trained_adapter_says_what_to_run(infer_args, tmp_path):
    invoke(prep_fewshot, infer_args, "--run", "n")
    result = CliRunner().invoke(infer_gsm8k.main, [*infer_args, "--run", "n"])
    assert result.exit_code != 0 and "no finished adapter" in result.output and "--base-only" in result.output


def test_adapter_from_another_base_model_is_refused(tmp_path, tiny_model_dir, smollm2_dir):
    (tmp_path / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "org/other-model"}))
    with pytest.raises(InputError, match="trained on 'org/other-model'"):
        check_adapter_base(tmp_path, "Qwen/Qwen3-4B-Instruct-2507")
    (tmp_path / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(tiny_model_dir)}))
    with pytest.raises(InputError, match="but this run's base model is"):
        check_adapter_base(tmp_path, str(smollm2_dir))
    check_adapter_base(tmp_path, str(tiny_model_dir))  # the same base passes


def test_trained_adapter_is_evaluated_in_each_format_and_the_metrics_name_the_base(train_run, tmp_path):
    train_run.prepared("t")
    train_run(train, "t")
    outputs = {}
    precisions = {"merged": "nf4-dequantized", "nf4": "nf4", "merged_original": "original"}
    for model_format, precision in precisions.items():  # one adapter, each format: the eval settings change
        train_run(infer_gsm8k, "t", "--set", f"eval.model_format={model_format}", "--set", "eval.max_new_tokens=4",
                  "--reconfigure")
        metrics = json.loads((tmp_path / "artifacts" / "gsm8k_metrics_t.json").read_text())
        assert metrics["generation"]["model_format"] == model_format
        assert metrics["generation"]["base_precision"] == precision
        assert metrics["generation"]["adapter"].endswith("adapter")
        outputs[model_format] = read_jsonl(tmp_path / "artifacts" / "gsm8k_preds_t.jsonl")
    assert [r["output"] for r in outputs["merged"]] == [r["output"] for r in outputs["nf4"]]
    # The evaluations each one replaced were moved aside, not deleted.
    assert len(list((tmp_path / "artifacts" / "run_t" / "superseded").glob("*/gsm8k_metrics_t.json"))) == 2
    train_run(infer_gsm8k, "t", "--base-only")
    metrics = json.loads((tmp_path / "artifacts" / "gsm8k_metrics_t_base.json").read_text())
    assert metrics["generation"]["base_precision"] == "original"


def _stage_command(args, run):
    return [sys.executable, "-m", "stages.infer_gsm8k", *args, "--run", run, "--base-only"]


STATIC = ["--set", "hardware.decode=static"]  # the second run of a pair: the static step, the same bytes


@pytest.mark.slow  # a kill and a rerun: the slow tier's kind of test
def test_killed_run_resumes_to_identical_bytes(infer_args, tmp_path):
    """The cut run decodes with the static step: killed, resumed, it writes the dynamic run's bytes."""
    invoke(prep_fewshot, infer_args, "--run", "whole")
    invoke(infer_gsm8k, infer_args, "--run", "whole", "--base-only")
    invoke(prep_fewshot, infer_args, *STATIC, "--run", "cut")

    partial = tmp_path / "artifacts" / "run_cut" / "partial_gsm8k_base" / "outputs.rank0.jsonl"
    kill_when(_stage_command([*infer_args, *STATIC], "cut"),  # once the first chunk is written
              lambda: partial.is_file() and len(partial.read_text().splitlines()) >= 2)
    final = tmp_path / "artifacts" / "gsm8k_preds_cut_base.jsonl"
    assert not final.exists()

    rerun = subprocess.run(_stage_command([*infer_args, *STATIC], "cut"), cwd=REPO, capture_output=True, text=True,
                           timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert final.read_bytes() == (tmp_path / "artifacts" / "gsm8k_preds_whole_base.jsonl").read_bytes()
    metrics = json.loads((tmp_path / "artifacts" / "gsm8k_metrics_cut_base.json").read_text())
    assert metrics["generation"]["decode"] == "static"


@pytest.mark.slow
def test_two_processes_write_the_same_file_as_one(infer_args, tmp_path):
    """Two processes decoding with the static step write the bytes of one with the dynamic step."""
    invoke(prep_fewshot, infer_args, "--run", "one")
    invoke(infer_gsm8k, infer_args, "--run", "one", "--base-only")
    invoke(prep_fewshot, infer_args, *STATIC, "--run", "two")
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "-m", "stages.infer_gsm8k", *infer_args, *STATIC, "--run", "two", "--base-only"]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    metrics = json.loads((tmp_path / "artifacts" / "gsm8k_metrics_two_base.json").read_text())
    assert metrics["generation"]["processes"] == 2 and metrics["generation"]["decode"] == "static"
    one = (tmp_path / "artifacts" / "gsm8k_preds_one_base.jsonl").read_bytes()
    assert (tmp_path / "artifacts" / "gsm8k_preds_two_base.jsonl").read_bytes() == one
