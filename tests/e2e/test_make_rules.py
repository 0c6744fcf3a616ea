"""Make's rules without a trained run: what reruns, what a target would run, the generated prerequisites."""

import json
import os
import shlex
import subprocess
import sys

import pytest

from tests.helpers import PIN_CPU, REPO, demo_smoke_limits

pytestmark = pytest.mark.skipif(not (REPO / ".venv" / ".installed").exists(), reason="needs `make venv`")


@pytest.fixture
def make(tmp_path, models_dir, gsm8k_files):
    train, _ = gsm8k_files
    base_set = f"data.gsm8k_train={train} fewshot.path={tmp_path / 'pool.jsonl'} {PIN_CPU}"
    env = {**os.environ, "MODELS_DIR": str(models_dir)}
    env.pop("MAKEFLAGS", None)

    def run(target, extra_set=""):
        # A changed key changes the run: that takes RECONFIGURE=1 (without it the call stops, tested below).
        args = ["make", "--no-print-directory", target, "PRESET=demo", "RUN=m", f"ARTIFACTS={tmp_path / 'artifacts'}",
                f"SET={base_set} {extra_set}".strip(), *(["RECONFIGURE=1"] if extra_set else [])]
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
               "infer_ailuminate", "score_safety", "summarize", "simple", "medium", "strong", "smoke", "clean-run",
               "refine", "base", "compare", "test-slow", "lint", "push", "download", "check", "export", "config-docs",
               "wheelhouse", "gpu-check"}
    assert targets <= listed
    variables = {entry.split("=")[0] for entry in listed if "=" in entry}
    assert {"PYTHON", "PRESET", "RUN", "SET", "SMOKE", "ARTIFACTS", "NPROC", "TRAIN_ARGS", "RUNS", "REPO",
            "PUBLIC"} <= variables


def test_clean_run_deletes_exactly_the_named_runs_files(tmp_path):
    artifacts = tmp_path / "artifacts"
    names = {run: [f"gsm8k_preds_{run}.jsonl", f"gsm8k_metrics_{run}_checkpoint-4.json",
                   f"ailuminate_safety_{run}.jsonl",
                   f"ailuminate_preds_{run}_base.jsonl", f"checkpoint_scores_{run}.csv", f"run_{run}/run.json"]
             for run in ("demo", "demo_2")}
    for files in names.values():
        for name in files:
            (artifacts / name).parent.mkdir(parents=True, exist_ok=True)
            (artifacts / name).write_text("x")
    (artifacts / "summary.csv").write_text("run_name\ndemo\ndemo_2\n")
    env = {k: v for k, v in os.environ.items() if k != "MAKEFLAGS"}
    done = subprocess.run(["make", "--no-print-directory", "clean-run", "RUN=demo", f"ARTIFACTS={artifacts}"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    remaining = {str(p.relative_to(artifacts)) for p in artifacts.rglob("*") if p.is_file()}
    assert remaining == set(names["demo_2"]) | {"summary.csv", "report.md"}
    # Its summary row too, and the index of runs rewritten without it (no dead link).
    assert (artifacts / "summary.csv").read_text().splitlines()[1:] == ["demo_2" + "," * (len(
        (artifacts / "summary.csv").read_text().splitlines()[0].split(",")) - 1)]
    assert "demo" not in (artifacts / "report.md").read_text().replace("demo_2", "")


def test_each_stage_rule_lists_the_lib_modules_it_imports():
    """The Makefile's prerequisites for each stage are lib/pipeline/stage_inputs.py's reading of its imports."""
    from lib.pipeline.stage_inputs import lib_modules, stage_names

    database = subprocess.run(["make", "-pn", "help"], cwd=REPO, capture_output=True, text=True).stdout
    rules = [line.split(": ", 1) for line in database.splitlines()
             if ": " in line and not line.startswith(("#", ".make/"))]  # not the rule that regenerates the lists
    # Commands with no file target to keep fresh, and refine (a code change never redoes hours of sampling).
    # setup_venv makes the venv itself: its stamp follows the requirements, not the installer's code.
    commands = {"push", "download", "clean_run", "sweep", "gpu_check", "wheelhouse", "refine", "check", "config_docs",
                "setup_venv"}
    for stage in stage_names():
        # The file rule that runs the stage: its prerequisites name the script.
        prerequisites = next((after.split() for _, after in rules if f"stages/{stage}.py" in after.split()), None)
        if prerequisites is None:
            assert stage in commands, f"stages/{stage}.py: no Make rule lists it"
            continue
        assert set(lib_modules(stage)) <= set(prerequisites), f"the {stage} rule does not list the lib/ code it runs"
    assert "lib/training/trainer.py" in lib_modules("train")
    assert "lib/training/trainer.py" not in lib_modules("infer_gsm8k")
    # Through lib/judge/scoring.py's lazy imports of the engine:
    assert "lib/engine/attention.py" in lib_modules("score_safety")


def test_the_makefiles_evaluation_targets_are_the_artifact_maps_names():
    """lib/pipeline/artifacts.py names every evaluation file; the Makefile's rules must build exactly those names
    (the final adapter's and, for the sweep, each checkpoint's: tag `_%`)."""
    from lib.pipeline.artifacts import RunPaths

    database = subprocess.run(["make", "-pn", "help", "RUN=x", "ARTIFACTS=a"], cwd=REPO, capture_output=True,
                              text=True).stdout
    targets = {}
    for line in database.splitlines():
        if ": " in line and not line.startswith("#") and line.startswith("a/"):
            target, prerequisites = line.split(": ", 1)
            scripts = [p for p in prerequisites.split() if p.startswith("stages/")]
            if scripts:
                targets.setdefault(scripts[0].removeprefix("stages/").removesuffix(".py"), set()).add(target)
    for stage in ("infer_gsm8k", "infer_ailuminate", "score_safety"):
        run = RunPaths("a", "x")
        assert targets[stage] == {str(run.evaluation(stage, "preds", tag)) for tag in ("", "_%")}, stage


def _make(tmp_path, *args, models_dir=None, dry=False):
    env = {key: value for key, value in os.environ.items() if key != "MAKEFLAGS"}
    if models_dir:
        env["MODELS_DIR"] = str(models_dir)
    done = subprocess.run(["make", "--no-print-directory", *(["-n"] if dry else []), *args,
                           f"ARTIFACTS={tmp_path / 'artifacts'}"], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def _stages_make_would_run(tmp_path, *args):
    """The stages `make -n summarize` lists (a dry run plans from what the call would record, so its plan is the
    real one; where the preflight would stop the real call, it says so and still prints the plan)."""
    dry = _make(tmp_path, "summarize", *args, dry=True)
    stages = [line.split("-m stages.")[1].split()[0] for line in dry.splitlines() if "-m stages." in line]
    return [stage for stage in stages if stage != "check"]  # the preflight Make runs before any stage


def test_strong_builds_its_refined_training_file_before_tokenize_only_when_it_is_absent(tmp_path):
    missing = tmp_path / "refined.jsonl"
    stages = _stages_make_would_run(tmp_path, "PRESET=strong", "RUN=s", f"SET=data.refined_train={missing}")
    assert stages[:3] == ["prep_fewshot", "refine", "tokenize"]

    (tmp_path / "mine.jsonl").write_text('{"question": "q", "answer": "#### 1"}\n')  # the user's own file
    stages = _stages_make_would_run(tmp_path, "PRESET=strong", "RUN=s2",
                                    f"SET=data.refined_train={tmp_path / 'mine.jsonl'}")
    assert "refine" not in stages and stages[:2] == ["prep_fewshot", "tokenize"]

    assert "refine" not in _stages_make_would_run(tmp_path, "PRESET=demo", "RUN=d")  # the demo names no refined file


def test_make_base_evaluates_the_base_model_without_any_training_stage(tmp_path):
    dry = _make(tmp_path, "base", "PRESET=demo", f"SET=fewshot.path={tmp_path / 'pool.jsonl'}", dry=True)
    assert "stages.infer_gsm8k" in dry and "stages.infer_ailuminate" in dry and "stages.score_safety" in dry
    assert "stages.train" not in dry and "stages.tokenize" not in dry
    assert not (tmp_path / "artifacts" / "run_demo-base").exists()  # a dry run records nothing of the run


@pytest.mark.slow
def test_two_base_runs_are_summarized_and_compared_end_to_end(tmp_path, models_dir):
    import csv

    common = f"fewshot.path={tmp_path / 'pool.jsonl'} eval.max_new_tokens=24 safety.max_new_tokens=4 {PIN_CPU}"
    _make(tmp_path, "base", "PRESET=demo", "SMOKE=1", f"SET={common}", models_dir=models_dir)
    _make(tmp_path, "summarize", "PRESET=demo", "RUN=demo-k1", "SMOKE=1",
          f"SET={common} eval.adapter=none sweep.enabled=false fewshot.k=1", models_dir=models_dir)
    with open(tmp_path / "artifacts" / "summary.csv", newline="") as handle:
        rows = {row["run_name"]: row for row in csv.DictReader(handle)}
    assert rows["demo-smoke-base"]["method"] == rows["demo-k1"]["method"] == "none"
    assert rows["demo-smoke-base"]["lora_r"] == ""
    assert not (tmp_path / "artifacts" / "run_demo-smoke-base" / "adapter").exists()

    out = _make(tmp_path, "compare", "RUNS=demo-smoke-base demo-k1")
    assert "compare: demo-k1 vs demo-smoke-base: GSM8K strict" in out
    result = json.loads((tmp_path / "artifacts" / "compare_demo-smoke-base_vs_demo-k1.json").read_text())
    strict = result["comparisons"][0]["gsm8k"]["strict"]
    questions, prompts = demo_smoke_limits()["gsm8k_limit"], demo_smoke_limits()["ailuminate_limit"]
    assert strict["n"] == questions
    assert strict["difference"] == pytest.approx((strict["fixed"] - strict["broken"]) / questions)
    assert result["comparisons"][0]["safety"]["overall"]["n"] == prompts


@pytest.mark.slow
def test_make_refine_on_two_processes_writes_the_file_of_one(tmp_path, models_dir):
    """`make refine PRESET=demo` end to end, once with 1 process and once with NPROC=2 (accelerate,
    gloo on the CPU): each sample is drawn from its own seed, so the files are the same bytes."""
    common = (f"fewshot.path={tmp_path / 'pool.jsonl'} refine.question_limit=6 refine.samples_per_question=2"
              f" refine.max_new_tokens=24 refine.chunk_size=2 refine.batch_size=2 {PIN_CPU}")
    _make(tmp_path, "refine", "PRESET=demo", "RUN=one", f"SET={common}", models_dir=models_dir)
    _make(tmp_path, "refine", "PRESET=demo", "RUN=two", "NPROC=2", f"SET={common}", models_dir=models_dir)
    one, two = ((tmp_path / "artifacts" / f"run_{run}" / "gsm8k_train_self-instruct.jsonl").read_bytes()
                for run in ("one", "two"))
    assert one == two and one.count(b'"source": "gsm8k"') == 6
    metrics = json.loads((tmp_path / "artifacts" / "run_two" / "refine_metrics.json").read_text())
    assert metrics["samples"] == 12


def test_a_refined_file_built_by_make_is_not_a_reason_to_rerun_tokenize(tmp_path, models_dir):
    """Make builds the missing refined file, tokenize reads it; the next call runs nothing (the file is
    a Make prerequisite, not also a fingerprinted input that changed since the run was recorded)."""
    settings = (f"fewshot.path={tmp_path / 'pool.jsonl'} data.refined_train={tmp_path / 'refined.jsonl'}"
                " refine.question_limit=2 refine.samples_per_question=1 refine.max_new_tokens=8")
    first = _make(tmp_path, "tokenize", "PRESET=demo", "RUN=r", f"SET={settings}", models_dir=models_dir)
    assert "stages.refine" in first and "stages.tokenize" in first
    assert (tmp_path / "refined.refine.json").is_file()
    again = _make(tmp_path, "tokenize", "RUN=r", models_dir=models_dir)
    assert "stages." not in again


def _train_launch(tmp_path, visible: str, *args) -> list[str]:
    """The train command `make -n train` prints with CUDA_VISIBLE_DEVICES=visible (a simulated GPU count)."""
    env = {key: value for key, value in os.environ.items() if key != "MAKEFLAGS"}
    env["CUDA_VISIBLE_DEVICES"] = visible
    done = subprocess.run(["make", "--no-print-directory", "-n", "train", "PRESET=demo", "RUN=l", *args,
                           f"ARTIFACTS={tmp_path / 'artifacts'}"], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    (line,) = [line for line in done.stdout.splitlines() if "-m stages.train" in line]
    return shlex.split(line)


def _accelerate_resolves(argv: list[str]):
    """accelerate's own reading of a launch command line (config file included), without launching."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser

    args = launch_command_parser().parse_args(argv[argv.index("launch") + 1:])
    return _validate_launch_command(args)[0]


@pytest.mark.parametrize("gpus", [2, 4, 8])
@pytest.mark.parametrize("config", [None, "presets/accelerate/multi_gpu.yaml",
                                    "presets/accelerate/deepspeed_zero2.yaml", "presets/accelerate/fsdp_qlora.yaml"])
def test_launches_take_the_process_count_from_the_machine_or_nproc(tmp_path, monkeypatch, gpus, config):
    monkeypatch.chdir(REPO)  # the command lines name the config files from the repository root
    visible = ",".join(str(index) for index in range(gpus))
    extra = [f"LAUNCH_CONFIG={config}"] if config else []
    default = _train_launch(tmp_path, visible, *extra)
    resolved = _accelerate_resolves(default)
    assert resolved.num_processes == gpus and resolved.num_machines == 1
    assert resolved.use_deepspeed == (config is not None and "deepspeed" in config)
    assert resolved.use_fsdp == (config is not None and "fsdp" in config)
    assert resolved.multi_gpu == (config is None or "multi_gpu" in config)
    assert _accelerate_resolves(_train_launch(tmp_path, visible, "NPROC=2", *extra)).num_processes == 2


def test_no_shipped_launch_config_names_a_process_count_and_one_visible_gpu_runs_one_process(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser

    for config in ("multi_gpu", "deepspeed_zero2", "fsdp_qlora"):
        args = launch_command_parser().parse_args(["--config_file", f"presets/accelerate/{config}.yaml", "x.py"])
        with pytest.raises(ValueError, match="--num_processes"):  # accelerate asks for it: nothing stale applies
            _validate_launch_command(args)
    assert _train_launch(tmp_path, "0")[:3] == [".venv/bin/python", "-m", "stages.train"]
    assert _train_launch(tmp_path, "")[:3] == [".venv/bin/python", "-m", "stages.train"]  # no GPU: one process


def test_gpu_check_runs_its_two_parts_and_stops_in_one_line_without_cuda(tmp_path):
    import torch

    dry = subprocess.run(["make", "-n", "gpu-check", f"ARTIFACTS={tmp_path}", "CARD=h200"], cwd=REPO,
                         capture_output=True, text=True, check=True).stdout
    assert "-m stages.gpu_check part1 --no-install --out " in dry and "-m stages.gpu_check part2 --no-install" in dry
    assert dry.count("--card h200") == 2
    if torch.cuda.is_available():
        pytest.skip("CUDA is here: the check would run")
    done = subprocess.run(["make", "--no-print-directory", "gpu-check", f"ARTIFACTS={tmp_path}"], cwd=REPO,
                          capture_output=True, text=True)
    assert done.returncode != 0 and not (tmp_path / "gpu_check").exists()
    (line,) = [line for line in done.stderr.splitlines() if line.startswith("Error:")]
    assert line.startswith("Error: gpu-check needs CUDA: torch.cuda.is_available() is False")


@pytest.mark.slow
def test_gpu_checks_second_part_runs_end_to_end_on_a_tiny_model_of_the_same_kind(tmp_path, models_dir):
    """Part 2 as on a node (training benchmark, then the seven stages on the model it built), wired the
    same way on a 2-layer model on the CPU, with the bundle's tiny judge; its rows and logs in --out."""
    from lib.checks.assets import write_check_models

    write_check_models(tmp_path / "bundle" / "models", models_dir)
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "stages.gpu_check", "part2", "--tiny", "--out", str(out),
                           "--work", str(tmp_path / "work"), "--bundle", str(tmp_path / "bundle")],
                          cwd=REPO, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = (out / "gpu_check.md").read_text().splitlines()[2:]
    assert [row.split(" | ")[1:3] for row in rows] == [
        ["environment", "PASS"], ["random Qwen3-4B-shaped model (built once per machine)", "PASS"],
        ["bench_gpu.py QLoRA training (Qwen3-4B shape)", "PASS"],
        ["whole chain, prep_fewshot .. summarize (Qwen3-4B shape)", "PASS"]]
    assert "chain: every stage in" in rows[3] and "64 GSM8K questions; decode dynamic (" in rows[3]
    assert "summary written" in rows[3]
    assert done.stdout.rstrip().endswith(rows[3])  # the table printed last
    assert {p.name for p in out.iterdir()} == {"gpu_check.md", "environment.txt", "model.txt", "bench_train.txt",
                                                "chain.txt"}


def test_no_make_started_by_the_suite_builds_a_venv(tmp_path):
    stamp = tmp_path / "venv" / ".installed"  # a stale stamp: older than the requirements files
    stamp.parent.mkdir()
    stamp.touch()
    os.utime(stamp, (0, 0))
    env = {key: value for key, value in os.environ.items() if key != "MAKEFLAGS"}
    planned = subprocess.run(["make", "-n", "venv", f"VENV={stamp.parent}"], cwd=REPO, env=env, capture_output=True,
                             text=True, check=True).stdout
    assert "-m venv" not in planned and "pip install" not in planned


def test_every_documented_accelerate_launch_names_its_process_count():
    """The launch configs name no process count, so accelerate refuses a command without --num_processes."""
    paths = [REPO / "README.md", *REPO.glob("docs/*.md"), *REPO.glob("stages/*.py")]
    commands = [(path.name, line.strip()) for path in paths for line in path.read_text().splitlines()
                if "accelerate launch " in line and ("-m " in line or line.rstrip().endswith("\\"))]
    assert commands and all("--num_processes" in line for _, line in commands), commands


def test_make_export_trains_first_when_needed_then_runs_the_export_stage(tmp_path):
    dry = _make(tmp_path, "export", "PRESET=demo", "RUN=e", f"SET=fewshot.path={tmp_path / 'pool.jsonl'}", dry=True)
    stages = [line.split("-m stages.")[1].split()[0] for line in dry.splitlines() if "-m stages." in line]
    assert [stage for stage in stages if stage != "check"] == ["prep_fewshot", "tokenize", "train", "export"]


def test_the_rehearsal_takes_a_python_of_the_nodes_version_that_runs_and_says_which_to_pass_when_none_does(tmp_path):
    """A pyenv shim of another version is on the PATH (it exits 127); the rehearsal takes the first
    candidate that runs and is that version, and without one stops in one line naming the variable."""
    shims, versions = tmp_path / "shims", tmp_path / "home" / ".pyenv" / "versions"
    shims.mkdir()
    (shims / "python3.11").write_text("#!/bin/sh\necho 'pyenv: python3.11: command not found' >&2\nexit 127\n")
    (shims / "python3.11").chmod(0o755)
    real = versions / "3.11.7" / "bin" / "python3.11"
    real.parent.mkdir(parents=True)
    real.symlink_to(sys.executable)  # a Python 3.11 that runs
    env = {**os.environ, "PATH": f"{shims}:{os.environ['PATH']}", "HOME": str(tmp_path / "home")}
    env.pop("MAKEFLAGS", None)

    def rehearse(*options):
        return subprocess.run(["make", "--no-print-directory", *options, "gpu-check-rehearsal", "NODE_PYTHON=3.11",
                               f"REHEARSAL={tmp_path / 'rehearsal'}"], cwd=REPO, env=env, capture_output=True,
                              text=True, timeout=120)

    plan = rehearse("-n")
    assert f'python="{real}"' in plan.stdout, plan.stdout
    refused = rehearse("-o", "wheelhouse", "REHEARSAL_PYTHON=" + str(shims / "python3.11"))
    assert refused.returncode != 0 and refused.stderr.strip().splitlines()[0] == (
        f"Error: no Python 3.11 that runs found ({shims / 'python3.11'} is not one);"
        " set REHEARSAL_PYTHON=/path/to/python3.11")
    assert not (tmp_path / "rehearsal").exists()  # stopped before any venv
