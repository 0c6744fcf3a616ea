"""A run's summary: the summary.csv row and the baseline check (the grades: lib/results/grades.py)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from lib.errors import InputError
from lib.io import atomic_write_text, read_jsonl
from lib.pipeline.artifacts import RunPaths

# Blank in a base run.
TRAINING_COLUMNS = ("train_data", "lora_r", "lora_alpha", "learning_rate", "epochs", "global_batch_size")
SUMMARY_COLUMNS = [
    "run_name", "base_model", "train_data", "method", "lora_r", "lora_alpha", "learning_rate", "epochs",
    "global_batch_size", "fewshot_k", "smoke", "gsm8k_questions", "ailuminate_prompts",
    "accuracy", "accuracy_ci95_low", "accuracy_ci95_high", "flexible_accuracy",
    "safety_rate", "safety_rate_strict", "safety_rate_loose", "controversial", "unparseable", "checkpoint",
    "accuracy_threshold", "safety_threshold", "result", "date", "git_commit",
]


def baseline_check(run: str, accuracy: float, safety: float, accuracy_threshold: float,
                   safety_threshold: float, scope: str | None = None) -> tuple[bool, str]:
    """(passed, the line that says so). `scope` (measured_scope) follows the verdict where the run did
    not measure the whole data: a smoke PASS then says so wherever the line is shown."""
    passed = accuracy >= accuracy_threshold and safety >= safety_threshold

    def sign(value: float, bound: float) -> str:
        return "≥" if value >= bound else "<"

    line = (f"{run}: accuracy {accuracy:.3f} {sign(accuracy, accuracy_threshold)} {accuracy_threshold:g},"
            f" safety {safety:.3f} {sign(safety, safety_threshold)} {safety_threshold:g}"
            f" → {'PASS' if passed else 'FAIL'}" + (f" ({scope})" if scope else ""))
    return passed, line


def measured_scope(smoke: bool, limited: bool, questions: int, prompts: int) -> str | None:
    """What a run measured when it was not the whole data (a smoke run, or data.*_limit), else None."""
    if not smoke and not limited:
        return None
    kind = "smoke run" if smoke else "limited run"
    return (f"{kind}: {questions} GSM8K questions and {prompts} AILuminate prompts only; not the preset's"
            " measurement")


def upsert_summary(path: Path, row: dict) -> None:
    """Replace the run's row in summary.csv (or add it), keeping the other runs in their order."""
    _write_summary(path, [r for r in _summary_rows(path) if r.get("run_name") != row["run_name"]] + [row])


def remove_summary_row(path: Path, run: str) -> bool:
    """Take the run's row out of summary.csv (clean-run); False when it had none."""
    rows = _summary_rows(path)
    kept = [r for r in rows if r.get("run_name") != run]
    if len(kept) == len(rows):
        return False
    _write_summary(path, kept)
    return True


def _summary_rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _write_summary(path: Path, rows: list[dict]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=SUMMARY_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows({column: r.get(column, "") for column in SUMMARY_COLUMNS} for r in rows)
    atomic_write_text(path, buffer.getvalue())


def write_checkpoint_scores(path: Path, scores: list[dict]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["checkpoint", "step", "accuracy", "safety", "accuracy_vs_final",
                                                "ci95_low", "ci95_high", "mcnemar_p"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(sorted(scores, key=lambda s: s["step"]))
    atomic_write_text(path, buffer.getvalue())


def read_json(path: Path, producer: str) -> dict:
    if not path.is_file():
        raise InputError(f"{path}: not found (run `{producer}` first)")
    return json.loads(path.read_text(encoding="utf-8"))


def read_evaluation(run: RunPaths, tag: str) -> dict:
    """One evaluated target's GSM8K metrics, safety metrics and safety labels."""
    return {
        "gsm8k": read_json(run.evaluation("infer_gsm8k", "metrics", tag), "make infer_gsm8k"),
        "safety": read_json(run.evaluation("score_safety", "metrics", tag), "make score_safety"),
        "labelled": read_jsonl(run.evaluation("score_safety", "preds", tag), required=("id", "label")),
        "correct": {row["id"]: bool(row["correct"]) for row in read_jsonl(
            run.evaluation("infer_gsm8k", "preds", tag), required=("id",), flags=("correct",))},
    }


def measured_columns(gsm8k: dict, safety: dict, passed: bool, smoke: bool) -> dict:
    """The summary row's measured part: what was measured (smoke or not, how many questions and prompts),
    accuracies with their interval, safety rates, the verdict."""
    low, high = gsm8k["accuracy_ci95"]
    rate = safety["safety_rate"]
    return {
        "smoke": "yes" if smoke else "no", "gsm8k_questions": gsm8k["questions"], "ailuminate_prompts": safety["total"],
        "accuracy": f"{gsm8k['accuracy']:.4f}", "accuracy_ci95_low": f"{low:.4f}", "accuracy_ci95_high": f"{high:.4f}",
        "flexible_accuracy": f"{gsm8k['flexible_accuracy']:.4f}", "safety_rate": f"{rate:.4f}",
        "safety_rate_strict": f"{safety.get('safety_rate_strict', rate):.4f}",
        "safety_rate_loose": f"{safety.get('safety_rate_loose', rate):.4f}",
        "controversial": safety.get("controversial", 0), "unparseable": safety["unparseable"],
        "result": "PASS" if passed else "FAIL",
    }
