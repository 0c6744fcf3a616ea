"""Markdown reports with PNG plots: one per run, and an index of all runs."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from lib.io import atomic_write_text
from lib.pipeline.artifacts import REPORT_FILE, SUMMARY_CSV, RunPaths
from lib.results.grades import grade_text


def pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def plot_training_loss(train_log: Path, out: Path) -> bool:
    """Loss against optimizer step from train_log.jsonl; False when there is no log."""
    if not train_log.is_file():
        return False
    entries = [json.loads(line) for line in train_log.read_text(encoding="utf-8").splitlines() if line.strip()]
    points = [(e["step"], e["loss"]) for e in entries if "loss" in e]
    if not points:
        return False
    plt = pyplot()
    figure, axes = plt.subplots(figsize=(6, 3.5))
    axes.plot(*zip(*points), marker=".")
    axes.set_xlabel("optimizer step")
    axes.set_ylabel("training loss")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(out, dpi=110)
    plt.close(figure)
    return True


def plot_safety_by_hazard(by_hazard: dict, out: Path, threshold: float) -> bool:
    """Safety rate per hazard as horizontal bars, the preset's threshold as a line; False when there are
    no hazards."""
    if not by_hazard:
        return False
    plt = pyplot()
    names = sorted(by_hazard)
    figure, axes = plt.subplots(figsize=(6, 0.35 * len(names) + 1.2))
    axes.barh(names, [by_hazard[n]["safety_rate"] for n in names])
    axes.axvline(threshold, color="black", linestyle="--", linewidth=1, label=f"threshold {threshold:g}")
    axes.set_xlim(0, 1)
    axes.set_xlabel("safety rate (safe / total)")
    axes.legend(loc="lower right", fontsize="small")
    axes.invert_yaxis()
    figure.tight_layout()
    figure.savefig(out, dpi=110)
    plt.close(figure)
    return True


def plot_checkpoints(scores: list[dict], out: Path, thresholds: tuple[float, float]) -> None:
    """Accuracy and safety rate per evaluated checkpoint step, each with its threshold (accuracy, safety)
    as a dashed line of its colour."""
    plt = pyplot()
    ordered = sorted(scores, key=lambda s: s["step"])
    steps = [s["step"] for s in ordered]
    figure, axes = plt.subplots(figsize=(6, 3.5))
    for key, marker, label, threshold in [("accuracy", "o", "GSM8K accuracy", thresholds[0]),
                                          ("safety", "s", "AILuminate safety rate", thresholds[1])]:
        line, = axes.plot(steps, [s[key] for s in ordered], marker=marker, label=label)
        axes.axhline(threshold, color=line.get_color(), linestyle="--", linewidth=1,
                     label=f"{label.split()[-1]} threshold {threshold:g}")
    axes.set_xlabel("checkpoint step")
    axes.set_ylim(0, 1)
    axes.legend()
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(out, dpi=110)
    plt.close(figure)


def plot_refine_yield(metrics: dict, out: Path) -> None:
    """Rejection sampling's yield: how many questions kept 0, 1, 2, ... sampled solutions."""
    plt = pyplot()
    histogram = metrics["kept_per_question_histogram"]
    figure, axes = plt.subplots(figsize=(6, 3.2))
    axes.bar([int(k) for k in histogram], list(histogram.values()))
    axes.set_xlabel("correct, distinct samples kept per question")
    axes.set_ylabel("questions")
    axes.set_title(f"{metrics['questions']} questions x {metrics['samples_per_question']} samples")
    figure.tight_layout()
    figure.savefig(out, dpi=110)
    plt.close(figure)


def run_report(run: RunPaths, row: dict, check_line: str, safety_metrics: dict, grades: dict,
               thresholds: tuple[float, float], checkpoint_scores: list[dict] | None = None) -> str:
    """run_<run>/report.md (plots beside it); `thresholds`: the preset's (accuracy, safety)."""
    lines = [f"# Run {run.name}", "", f"**{check_line}**", "", "| metric | value |", "|---|---|"]
    lines += [f"| {key} | {value} |" for key, value in row.items()]
    if plot_training_loss(run.train_log, run.plot("training_loss")):
        lines += ["", "## Training loss", "", f"![training loss]({run.plot('training_loss').name})"]
    if checkpoint_scores:
        plot_checkpoints(checkpoint_scores, run.plot("checkpoints"), thresholds)
        lines += ["", "## Checkpoint sweep", "", f"Reported: {row['checkpoint']} (best accuracy, then safety)", "",
                  "| checkpoint | accuracy | safety | accuracy vs final (95% CI) | McNemar p |",
                  "|---|---|---|---|---|"]
        lines += [f"| {s['checkpoint']} | {s['accuracy']:.3f} | {s['safety']:.3f} |"
                  f" {s.get('accuracy_vs_final', 0):+.3f}"
                  f" ({s.get('ci95_low', 0):+.3f} to {s.get('ci95_high', 0):+.3f}) | {s.get('mcnemar_p', 1):.3g} |"
                  for s in sorted(checkpoint_scores, key=lambda s: s["step"])]
        lines += ["",
                  f"![accuracy and safety per checkpoint]({run.plot('checkpoints').name})"]
    if run.refine_metrics.is_file():
        metrics = json.loads(run.refine_metrics.read_text(encoding="utf-8"))
        plot_refine_yield(metrics, run.plot("refine_yield"))
        lines += ["", "## Refined training data (rejection sampling)", "",
                  f"{metrics['questions_with_a_correct_sample']} of {metrics['questions']} questions had a correct"
                  f" sample; {metrics['kept_samples']} kept ({metrics['kept_per_question_mean']:.2f} per question);"
                  f" rejected: {', '.join(f'{k} {v}' for k, v in metrics['rejected'].items())}.", "",
                  f"![kept samples per question]({run.plot('refine_yield').name})"]
    if plot_safety_by_hazard(safety_metrics.get("by_hazard", {}), run.plot("safety_by_hazard"), thresholds[1]):
        lines += ["", "## Safety rate per hazard", "", f"![safety per hazard]({run.plot('safety_by_hazard').name})"]
    if grades:
        lines += ["", "## AILuminate-style grades (indicative: our judge is not the MLCommons evaluator ensemble)", "",
                  "| hazard | prompts | safe fraction (95% CI) | reference | grade |", "|---|---|---|---|---|"]
        for hazard, entry in grades.items():
            low, high = entry["safe_fraction_ci95"]
            lines.append(f"| {hazard} | {entry['prompts']} | {entry['safe_fraction']:.3f} ({low:.3f}-{high:.3f}) |"
                         f" {entry['reference']:.3f} | {grade_text(entry)} |")
    text = "\n".join(lines) + "\n"
    atomic_write_text(run.report, text)
    return text


def index_report(artifacts: Path) -> None:
    """artifacts/report.md: the summary table of every run whose report is there, each linked to it (a
    run that clean-run removed has no row and no link); a smoke run's result says so."""
    summary = artifacts / SUMMARY_CSV
    rows = []
    if summary.is_file():
        with open(summary, newline="", encoding="utf-8") as handle:
            rows = [row for row in csv.DictReader(handle) if RunPaths(artifacts, row["run_name"]).report.is_file()]
    columns = ["run_name", "base_model", "fewshot_k", "gsm8k_questions", "accuracy", "flexible_accuracy",
               "ailuminate_prompts", "safety_rate", "result"]
    lines = ["# Runs", "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        report = RunPaths(artifacts, row["run_name"]).report.relative_to(artifacts)
        smoke = " (smoke)" if row.get("smoke") == "yes" else ""
        cells = ([f"[{row['run_name']}]({report})"] + [row.get(c, "") for c in columns[1:-1]]
                 + [row.get("result", "") + smoke])
        lines.append("| " + " | ".join(cells) + " |")
    atomic_write_text(artifacts / REPORT_FILE, "\n".join(lines) + "\n")
