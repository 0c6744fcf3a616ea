"""The run object (lib/pipeline/artifacts.py RunPaths) is the one place a run's file names are formed."""

import ast
from pathlib import Path

from lib.pipeline.artifacts import RunPaths
from lib.pipeline.stage_inputs import REPO

# Stems of the files at the artifact root that name a run, and of a run's unfinished work.
ROOT_PATTERNS = ("partial_", "gsm8k_preds_", "gsm8k_metrics_", "ailuminate_preds_", "ailuminate_metrics_",
                 "ailuminate_safety_", "checkpoint_scores_", "compare_")


def _run_object_names() -> set[str]:
    """Every file and folder name the run object forms, from a run called R."""
    run = RunPaths(Path("A"), "R")
    paths = [run.folder, run.identity, run.record, run.params("S").parent, run.make_vars, run.pool, run.tokenized,
             run.tokenized_meta, run.adapter_staging, run.training_complete, run.summary, run.report,
             run.refine_metrics, run.refined_output(None), run.superseded, run.merged(), *run.training_outputs]
    return {path.name for path in paths}


def _code_files() -> list[Path]:
    files = sorted((REPO / "lib").rglob("*.py")) + sorted((REPO / "stages").glob("*.py"))
    return [path for path in files if path != REPO / "lib" / "pipeline" / "artifacts.py"]


def test_no_artifact_name_is_spelled_outside_the_run_object():
    names = _run_object_names()
    files_names = {name for name in names if "." in name}  # adapter, merged, ... are also plain words
    found = []
    for path in _code_files():
        tree = ast.parse(path.read_text(), str(path))
        docstrings = {id(node.value) for node in ast.walk(tree) if isinstance(node, ast.Expr)}
        for node in ast.walk(tree):
            if id(node) in docstrings:
                continue
            where = f"{path.relative_to(REPO)}:{getattr(node, 'lineno', 0)}"
            # A path joined with a literal name of the run object: `folder / "adapter"`
            if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div) and isinstance(node.right, ast.Constant):
                if node.right.value in names:
                    found.append(f"{where} / {node.right.value!r}")
            # A file name of the run object, or a run-named root file's stem, anywhere
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                if node.value in files_names or node.value.startswith(ROOT_PATTERNS):
                    found.append(f"{where} {node.value!r}")
            # A run folder formed by hand: f"run_{...}"
            elif isinstance(node, ast.JoinedStr) and node.values and isinstance(node.values[0], ast.Constant) \
                    and str(node.values[0].value).startswith(("run_", *ROOT_PATTERNS)):
                found.append(f"{where} {ast.unparse(node)}")
    assert found == []


def test_the_run_object_names_what_the_stages_write():
    run = RunPaths(Path("artifacts"), "demo")
    assert run.folder == Path("artifacts/run_demo")
    assert run.evaluation("infer_gsm8k", "preds", "_checkpoint-4") == Path(
        "artifacts/gsm8k_preds_demo_checkpoint-4.jsonl")
    assert run.evaluation("score_safety", "metrics") == Path("artifacts/ailuminate_safety_metrics_demo.json")
    assert run.partial("safety", "_base") == Path("artifacts/run_demo/partial_safety_base")
    assert run.merged("checkpoint-4") == Path("artifacts/run_demo/merged-checkpoint-4")
    assert run.training_outputs == [run.adapter, run.checkpoints, run.train_log, run.tensorboard]
