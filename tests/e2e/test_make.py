"""Make targets are files: unchanged stages are skipped, a changed key reruns its first reader."""

import json
import os
import subprocess

import pytest

from tests.helpers import PIN_CPU, REPO, demo_smoke_limits

pytestmark = pytest.mark.skipif(not (REPO / ".venv" / ".installed").exists(), reason="needs `make venv`")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory, models_dir):
    """`make smoke PRESET=demo` once, with the sweep on and a fake HF_TOKEN in the environment:
    every stage on the embedded model at smoke sizes. Returns a runner for later make calls."""
    tmp_path = tmp_path_factory.mktemp("smoke")
    artifacts = tmp_path / "artifacts"
    token = "hf_FAKEtokenE2E0123456789abcdef"
    env = {**os.environ, "MODELS_DIR": str(models_dir), "HF_TOKEN": token}
    env.pop("MAKEFLAGS", None)

    def make(*args, check=True, timeout=900):
        done = subprocess.run(["make", "--no-print-directory", *args, f"ARTIFACTS={artifacts}"], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=timeout)
        assert not check or done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        return done

    make.first_args = ["smoke", "PRESET=demo",
                       f"SET=fewshot.path={tmp_path / 'pool.jsonl'} eval.max_new_tokens=16 safety.max_new_tokens=4"
                       f" train.save_steps=2 sweep.enabled=true sweep.last_n=2 {PIN_CPU}"
                       # Make's mechanics, not the model formats (tests/stages, tests/test_models.py): the CPU's
                       # 4-bit quantization of the default `merged` would add ~7 s to each of the 4 evaluations.
                       " eval.model_format=merged_original"]
    make.first = make(*make.first_args)
    make.artifacts, make.run_dir, make.token = artifacts, artifacts / "run_demo-smoke", token
    return make


def test_smoke_chain_end_to_end_writes_every_artifact(smoke):
    import csv

    artifacts, run, done = smoke.artifacts, smoke.run_dir, smoke.first
    assert "demo-smoke: accuracy" in done.stdout and "→ PASS" in done.stdout
    for path in [run / "config_resolved.json", run / "run.json", run / "train_tokenized.meta.json",
                 run / "adapter" / "training_complete.json", run / "summary.json",
                 artifacts / "gsm8k_metrics_demo-smoke.json", artifacts / "ailuminate_metrics_demo-smoke.json",
                 artifacts / "ailuminate_safety_metrics_demo-smoke.json"]:
        json.loads(path.read_text())
    counts = {"fewshot.jsonl": 8, "train_tokenized.jsonl": 16, "train_log.jsonl": None}
    for name, expected in counts.items():
        lines = [json.loads(line) for line in (run / name).read_text().splitlines()]
        assert expected is None or len(lines) == expected
    limits = demo_smoke_limits()
    for name, expected in [("gsm8k_preds_demo-smoke.jsonl", limits["gsm8k_limit"]),
                           ("ailuminate_preds_demo-smoke.jsonl", limits["ailuminate_limit"]),
                           ("ailuminate_safety_demo-smoke.jsonl", limits["ailuminate_limit"])]:
        assert len([json.loads(line) for line in (artifacts / name).read_text().splitlines()]) == expected
    assert (run / "adapter" / "adapter_model.safetensors").is_file()
    for plot in ("training_loss.png", "safety_by_hazard.png"):
        assert (run / plot).read_bytes().startswith(b"\x89PNG") and plot in (run / "report.md").read_text()
    assert "(run_demo-smoke/report.md)" in (artifacts / "report.md").read_text()
    # The sweep: 16 examples / 4 per step = 4 steps, checkpoints at 2 and 4; 4 is the final adapter.
    with open(artifacts / "checkpoint_scores_demo-smoke.csv", newline="") as handle:
        scores = list(csv.DictReader(handle))
    assert [row["checkpoint"] for row in scores] == ["checkpoint-2", "checkpoint-4"]
    # Each checkpoint's paired difference to the final adapter (checkpoint-4): the final against itself is 0, p 1.
    assert (float(scores[1]["accuracy_vs_final"]), float(scores[1]["mcnemar_p"])) == (0.0, 1.0)
    assert float(scores[0]["ci95_low"]) <= float(scores[0]["accuracy_vs_final"]) <= float(scores[0]["ci95_high"])
    assert "accuracy vs final (95% CI)" in (run / "report.md").read_text()
    assert (artifacts / "gsm8k_preds_demo-smoke_checkpoint-2.jsonl").is_file()
    # Made by pattern rules, so intermediate files to Make, which deleted them once: they are kept.
    assert (artifacts / "ailuminate_preds_demo-smoke_checkpoint-2.jsonl").is_file()
    assert (run / "checkpoints.png").is_file()
    assert json.loads((run / "summary.json").read_text())["row"]["checkpoint"] in ("checkpoint-2", "checkpoint-4")
    with open(artifacts / "summary.csv", newline="") as handle:
        (row,) = csv.DictReader(handle)
    assert row["run_name"] == "demo-smoke"
    # A smoke PASS says what it measured wherever it is read: the row, the check line, both reports.
    questions, prompts = demo_smoke_limits()["gsm8k_limit"], demo_smoke_limits()["ailuminate_limit"]
    assert (row["smoke"], row["gsm8k_questions"], row["ailuminate_prompts"]) == ("yes", str(questions), str(prompts))
    scope = (f"(smoke run: {questions} GSM8K questions and {prompts} AILuminate prompts only;"
             " not the preset's measurement)")
    assert f"→ PASS {scope}" in done.stdout and scope in (run / "report.md").read_text()
    assert "PASS (smoke)" in (artifacts / "report.md").read_text()
    # One prompt per hazard: its 95% interval spans every grade, and the grade says so.
    assert "grade 1-5 (the 95% interval spans them; 5 Excellent at the estimate)" in done.stdout
    assert json.loads((run / "run.json").read_text()) == {
        "preset": "presets/demo.yaml", "overrides": smoke.first_args[2].removeprefix("SET=").split(), "smoke": True}

    # A token in the environment reaches no artifact and no log line.
    assert smoke.token not in done.stdout + done.stderr
    assert not [p for p in artifacts.rglob("*") if p.is_file() and smoke.token.encode() in p.read_bytes()]


def test_the_adapter_carries_a_model_card_the_hub_can_read(smoke):
    from huggingface_hub import ModelCard

    from lib.results.push import prepare_upload

    summary = json.loads((smoke.run_dir / "summary.json").read_text())
    card = ModelCard.load(smoke.run_dir / "adapter" / "README.md")
    data = card.data.to_dict()
    assert data["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct" and data["library_name"] == "peft"
    assert "datasets" not in data  # the demo's own files, not the hub's openai/gsm8k
    (gsm8k_result,) = [r for r in card.data.eval_results if r.metric_type == "accuracy"]
    questions = demo_smoke_limits()["gsm8k_limit"]
    assert gsm8k_result.dataset_split == f"test[:{questions}]" and "smoke run" in gsm8k_result.dataset_name
    limits = demo_smoke_limits()
    assert (f"**A smoke run**: {limits['gsm8k_limit']} GSM8K questions and {limits['ailuminate_limit']} AILuminate"
            " prompts") in card.text
    assert "last logged training loss" in card.text
    values = {result.metric_type: result.metric_value for result in card.data.eval_results}
    row = summary["row"]  # rounded to 4 places in the CSV row
    assert values == {"accuracy": pytest.approx(float(row["accuracy"]), abs=5e-5),
                      "safety_rate": pytest.approx(float(row["safety_rate"]), abs=5e-5)}
    assert summary["baseline_check"] in card.text and "learning_rate=" in card.text
    assert str(smoke.artifacts) not in card.content  # no path of this machine
    assert data["license"] == "apache-2.0"  # the base model's
    assert "make export RUN=demo-smoke" in card.text
    if summary["row"]["checkpoint"] != "checkpoint-4":  # the sweep reported an earlier checkpoint: it has the card too
        assert (smoke.run_dir / "checkpoints" / summary["row"]["checkpoint"] / "README.md").read_text() == str(card)

    # What `make push` would send: the weights, their config and the card, private; never the training record.
    plan = prepare_upload(smoke.artifacts, "demo-smoke", "someone/demo-smoke")
    operations = {op.path_in_repo: op for op in plan.operations()}
    assert plan.private and set(operations) == {"adapter_config.json", "adapter_model.safetensors", "README.md"}
    with operations["README.md"].as_file() as sent:
        assert sent.read() == (smoke.run_dir / "adapter" / "README.md").read_bytes()
    done = smoke("push", "RUN=demo-smoke", "REPO=someone/demo-smoke", check=False)  # offline: one line, nothing sent
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if line.startswith("Error:")]
    assert errors == ["Error: push someone/demo-smoke: the hub cannot be reached (offline, or HF_HUB_OFFLINE is set):"
                      " run `make push` where there is internet"], done.stderr[-2000:]


def test_the_cards_how_to_use_snippet_runs_on_the_adapter(smoke, models_dir, capsys):
    """The snippet as a user copies it, with the hub id and repository pointed at this machine's copies."""
    text = (smoke.run_dir / "adapter" / "README.md").read_text()
    snippet = text.split("## How to use")[1].split("```python\n")[1].split("```")[0]
    assert "BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=\"nf4\"" in snippet
    local = (snippet.replace("HuggingFaceTB/SmolLM2-135M-Instruct", str(models_dir / "smollm2-135m-instruct"))
             .replace("path/to/adapter-or-you/repo", str(smoke.run_dir / "adapter"))
             .replace("max_new_tokens=512", "max_new_tokens=4"))
    exec(compile(local, "README.md snippet", "exec"), {})
    assert capsys.readouterr().out.strip()  # it answered


def test_a_finished_pipeline_reruns_nothing(smoke):
    import time

    start = time.perf_counter()
    again = smoke(*smoke.first_args, timeout=120)
    assert "stages." not in again.stdout
    assert time.perf_counter() - start < 5


def test_a_dry_run_prints_the_real_plan_and_records_nothing(smoke):
    """make -n on the finished run: no stage (the sweep's loop line is printed as Make runs it, to ask
    for the checkpoints; its sub-makes plan nothing); with a changed evaluation key and RECONFIGURE=1,
    the evaluations and summarize, not training; the run's record unchanged either way."""
    recorded = {p: p.read_bytes() for p in (smoke.run_dir / "run.json", smoke.run_dir / "config_resolved.json")}
    finished = smoke("-n", "summarize", "RUN=demo-smoke").stdout
    assert [line for line in finished.splitlines() if "stages." in line and "stages.sweep" not in line] == []
    plan = smoke("-n", "summarize", "RUN=demo-smoke", "SET=eval.max_new_tokens=8", "RECONFIGURE=1").stdout
    planned = {line.split("-m stages.")[1].split()[0] for line in plan.splitlines() if "-m stages." in line}
    assert {"infer_gsm8k", "summarize"} <= planned and not planned & {"prep_fewshot", "tokenize", "train"}
    assert {p: p.read_bytes() for p in recorded} == recorded


def test_a_runtime_key_changes_nothing_and_reruns_nothing(smoke):
    """Batch and chunk sizes change no greedy answer: a finished evaluation stays finished, no RECONFIGURE."""
    for setting in ("eval.batch_size=4", "eval.chunk_size=3 safety.batch_size=2"):
        done = smoke("summarize", "RUN=demo-smoke", f"SET={setting}")
        assert "stages." not in done.stdout.replace("stages.sweep", ""), done.stdout


def _trained_files(run_dir):
    """Bytes of every file of the adapter and the checkpoints."""
    return {p.relative_to(run_dir): p.read_bytes() for folder in ("adapter", "checkpoints")
            for p in sorted((run_dir / folder).rglob("*")) if p.is_file()}


def test_one_stage_rerun_by_run_name_alone_never_touches_the_trained_run(smoke):
    """The documented `make score_safety RUN=<run>`: no PRESET, SET or SMOKE; the run remembers them."""
    trained = _trained_files(smoke.run_dir)
    for target in ("score_safety", "infer_gsm8k", "summarize"):
        assert "stages." not in smoke(target, "RUN=demo-smoke").stdout  # up to date: nothing runs
    (smoke.artifacts / "ailuminate_safety_demo-smoke.jsonl").unlink()  # the user wants the labels again
    redone = smoke("score_safety", "RUN=demo-smoke").stdout
    assert "stages.score_safety" in redone
    assert [s for s in ("prep_fewshot", "tokenize", "train", "infer_") if f"stages.{s}" in redone] == []
    summarized = smoke("summarize", "RUN=demo-smoke").stdout
    assert "stages.summarize" in summarized and "stages.train" not in summarized
    assert _trained_files(smoke.run_dir) == trained


def test_a_run_that_does_not_exist_says_how_to_start_it(smoke):
    done = smoke("score_safety", "RUN=never-made", check=False)
    assert done.returncode != 0
    assert "run 'never-made' does not exist yet" in done.stdout + done.stderr
    assert "PRESET=" in done.stdout + done.stderr


def test_a_conflicting_call_stops_and_reconfigure_sets_the_old_adapter_aside(smoke):
    """Runs last: it retrains the module's run."""
    def snapshot():  # the run's work (the lock file only names the last command that held it)
        return {p: p.read_bytes() for p in smoke.artifacts.rglob("*")
                if p.is_file() and "models" not in p.parts and p.name != ".lock"}

    before = snapshot()
    old_adapter = (smoke.run_dir / "adapter" / "adapter_model.safetensors").read_bytes()
    conflict = smoke("train", "RUN=demo-smoke", "SET=train.learning_rate=0.002", check=False)
    assert conflict.returncode != 0
    message = conflict.stdout + conflict.stderr
    assert "train.learning_rate: 0.001 -> 0.002" in message and "RECONFIGURE=1" in message
    assert "stages.train" not in message
    assert snapshot() == before

    # Retraining sets the old work aside before its first step; one step shows it (the rest is test_train's).
    retrained = smoke("train", "RUN=demo-smoke", "SET=train.learning_rate=0.002", "RECONFIGURE=1",
                      "TRAIN_ARGS=--stop-after 1").stdout
    assert "stages.train" in retrained and "moved the earlier adapter, checkpoints" in retrained
    assert "stopped after 1 steps as asked" in retrained
    (aside,) = [folder for folder in (smoke.run_dir / "superseded").iterdir() if (folder / "adapter").is_dir()]
    assert (aside / "adapter" / "adapter_model.safetensors").read_bytes() == old_adapter
    assert (aside / "checkpoints" / "checkpoint-2").is_dir() and (aside / "train_log.jsonl").is_file()
    assert (smoke.run_dir / "checkpoints" / "checkpoint-1").is_dir()  # the new run's own first step
    assert json.loads((smoke.run_dir / "run.json").read_text())["overrides"][-1] == "train.learning_rate=0.002"
