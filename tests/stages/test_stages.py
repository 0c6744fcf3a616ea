"""The stage scripts run through click's CliRunner, asserting the files they write."""

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from lib.chat import IGNORE_INDEX
from lib.pipeline.stage_inputs import stage_names
from stages import prep_fewshot, tokenize
from tests.helpers import PIN_CPU, PRESET_DIR, REPO, make_problems

FAKE_TOKEN = "hf_FAKEtokenVALUE0123456789abcdef"


@pytest.fixture
def run_stage(tmp_path, models_dir, gsm8k_files, monkeypatch):
    """Run a stage on the demo preset pointed at the test's files; returns the click result."""
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    train, test = gsm8k_files

    def run(stage, *extra):
        args = ["--preset", str(PRESET_DIR / "demo.yaml"), "--run", "t", "--artifacts", str(tmp_path / "artifacts"),
                "--models-dir", str(models_dir), "--set", f"data.gsm8k_train={train}",
                "--set", f"data.gsm8k_test={test}", "--set", f"fewshot.path={tmp_path / 'pool.jsonl'}",
                "--set", PIN_CPU, *extra]
        return CliRunner().invoke(stage.main, args)

    return run


def test_prep_fewshot_and_tokenize_write_their_artifacts(run_stage, tmp_path):
    result = run_stage(prep_fewshot)
    assert result.exit_code == 0, result.output
    run_dir = tmp_path / "artifacts" / "run_t"
    pool = [json.loads(line) for line in (tmp_path / "pool.jsonl").read_text().splitlines()]
    assert len(pool) == 8
    assert (run_dir / "fewshot.jsonl").read_bytes() == (tmp_path / "pool.jsonl").read_bytes()

    result = run_stage(tokenize)
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (run_dir / "train_tokenized.jsonl").read_text().splitlines()]
    assert len(rows) == 20 - 8
    assert {row["id"] for row in rows}.isdisjoint({row["id"] for row in pool})
    assert all(len(r["input_ids"]) == len(r["labels"]) and IGNORE_INDEX in r["labels"] for r in rows)
    meta = json.loads((run_dir / "train_tokenized.meta.json").read_text())
    assert (meta["records_read"], meta["fewshot_removed"], meta["examples"]) == (20, 8, 12)
    assert "12 written" in result.output and "p50" in result.output


def test_resolved_config_records_provenance(run_stage, tmp_path, gsm8k_files):
    assert run_stage(prep_fewshot, "--set", "train.epochs=3").exit_code == 0
    record = json.loads((tmp_path / "artifacts" / "run_t" / "config_resolved.json").read_text())
    assert record["config"]["train"]["epochs"] == 3.0
    assert "train.epochs=3" in record["overrides"]
    assert record["seeds"] == {"fewshot": 42, "train": 1234}
    import torch

    assert record["libraries"]["torch"] == torch.__version__  # the installed one, whichever is supported
    assert record["inputs"]["data.gsm8k_train"] == {"path": str(gsm8k_files[0]), "records": 20}
    assert "git_commit" in record and "date" in record


def test_smoke_limits_the_training_examples(run_stage, tmp_path):
    smoke = ("--smoke", "--set", "smoke.train_limit=5")
    assert run_stage(prep_fewshot, *smoke).exit_code == 0
    assert run_stage(tokenize).exit_code == 0  # the run remembers it is a smoke run
    lines = (tmp_path / "artifacts" / "run_t" / "train_tokenized.jsonl").read_text().splitlines()
    assert len(lines) == 5


def test_no_token_reaches_any_artifact(run_stage, tmp_path):
    assert run_stage(prep_fewshot).exit_code == 0
    result = run_stage(tokenize)
    assert result.exit_code == 0 and FAKE_TOKEN not in result.output
    for path in (tmp_path / "artifacts").rglob("*"):
        if path.is_file():
            assert FAKE_TOKEN.encode() not in path.read_bytes(), path


def test_malformed_train_file_fails_in_one_line_without_artifacts(run_stage, tmp_path):
    train = tmp_path / "gsm8k_train.jsonl"
    train.write_text(json.dumps(make_problems(1)[0]) + "\n{broken\n")
    result = run_stage(prep_fewshot)
    assert result.exit_code != 0
    assert result.output.strip().splitlines() == [f"Error: {train}:2: not a valid JSON line "
                                                   "(expected JSONL of GSM8K problems with fields question, answer)"]
    assert not (tmp_path / "pool.jsonl").exists()
    assert not (tmp_path / "artifacts" / "run_t" / "fewshot.jsonl").exists()


def test_tokenize_before_prep_fewshot_says_what_to_run(run_stage, tmp_path):
    result = run_stage(tokenize)
    assert result.exit_code != 0 and "run `make prep_fewshot RUN=t` first" in result.output
    assert not (tmp_path / "artifacts" / "run_t" / "train_tokenized.jsonl").exists()


@pytest.mark.parametrize("name, hint", [
    ("train", "run `make tokenize RUN=t` first"),
    ("score_safety", "run `make infer_ailuminate RUN=t` first"),
    ("infer_ailuminate", "run `make train RUN=t` first, or pass --base-only"),
])
def test_a_stage_whose_input_is_missing_names_the_make_call_for_this_run(run_stage, name, hint):
    import importlib

    result = run_stage(importlib.import_module(f"stages.{name}"))
    assert result.exit_code != 0 and hint in result.output, result.output


@pytest.mark.parametrize("args, message", [
    (["--run", "../escape"], "run name '../escape'"),
    (["--set", "train.epochs=many"], "key 'train.epochs' expects float"),
    (["--set", "train.epoch=2"], "unknown key 'train.epoch'"),
])
def test_bad_options_fail_before_any_work(run_stage, tmp_path, args, message):
    result = run_stage(prep_fewshot, *args)
    assert result.exit_code != 0 and message in result.output
    assert not (tmp_path / "pool.jsonl").exists()


@pytest.mark.parametrize("name", stage_names())
def test_every_stage_help_shows_its_description_and_example_commands(name):
    import importlib

    stage = importlib.import_module(f"stages.{name}")
    if name == "setup_venv":  # argparse: it runs with the system Python, before the venv that holds click
        result = subprocess.run([sys.executable, "-m", "stages.setup_venv", "--help"], cwd=REPO, capture_output=True,
                                text=True)
        exit_code, output = result.returncode, result.stdout
    else:
        result = CliRunner().invoke(stage.main, ["--help"])
        exit_code, output = result.exit_code, result.output
    # compare reads several runs; the GPU check and its wheelhouse are about machines, not a run
    run_options = {"compare": ("--runs",), "gpu_check": ("part1", "part2"),
                   "wheelhouse": ("--image", "--cuda", "--python"), "push": ("--run", "--repo", "--public"),
                   "clean_run": ("--run",), "config_docs": ("--out",),
                   "setup_venv": ("--installer", "--venv-args")}.get(name, ("--preset", "--set"))
    assert exit_code == 0 and all(option in output for option in run_options)
    first_line = stage.__doc__.strip().splitlines()[0]
    assert first_line.split()[0] in output  # the description
    assert f"    python -m stages.{name}" in output  # an example command, kept on its own line
