"""Summarize a run: one row in artifacts/summary.csv, the baseline check, indicative grades.

    python -m stages.summarize --preset presets/demo.yaml
    make summarize RUN=simple PRESET=simple

Reads gsm8k_metrics_<run>.json, ailuminate_safety_<run>.jsonl and its metrics, the run's
config_resolved.json and training_complete.json. With sweep.enabled it also reads each swept
checkpoint's evaluations, writes checkpoint_scores_<run>.csv with each checkpoint's paired accuracy
difference to the final adapter, and reports the best checkpoint (by accuracy, then safety; a tie
goes to the later step) and whether it is distinguishable from the final one. A base run
(eval.adapter: none) gets method `none`. Replaces the run's row in summary.csv (never
duplicates it), prints e.g. `strong: accuracy 0.412 ≥ 0.37, safety 0.455 ≥ 0.42 → PASS`, and
writes run_<run>/summary.json with AILuminate-style grades per hazard (indicative: our judge is
not the MLCommons evaluator ensemble), run_<run>/report.md with PNG plots (training loss, safety
per hazard) and artifacts/report.md indexing every run. A trained run's adapter folder (and the
reported checkpoint's) gets a model card, README.md, with the Hub's front matter (`make push`).
"""

import json

import click

from lib.console import stage_help
from lib.io import atomic_write_json, atomic_write_text
from lib.pipeline.artifacts import CHECKPOINT_PREFIX, SUMMARY_CSV, checkpoint_step
from lib.pipeline.cli import stage_command
from lib.results.grades import ailuminate_grades, grade_lines
from lib.results.model_card import model_card
from lib.results.report import index_report, run_report
from lib.results.summary import (
    SUMMARY_COLUMNS,
    TRAINING_COLUMNS,
    baseline_check,
    measured_columns,
    measured_scope,
    read_evaluation,
    read_json,
    upsert_summary,
    write_checkpoint_scores,
)
from lib.results.sweep import add_differences_to_final, choose_best, distinguishable_line, earlier_checkpoints


@click.command(help=stage_help(__doc__))
@stage_command
def main(stage):
    config, run = stage.config, stage.run

    # Inputs: the run's evaluations, or with the sweep those of each evaluated checkpoint
    record = read_json(run.record, "a stage of this run")
    training = json.loads(run.training_complete.read_text(encoding="utf-8")) if run.training_complete.is_file() else {}
    final = f"{CHECKPOINT_PREFIX}{training['global_step']}" if training else "final"
    tags = {final: ""}
    if config.sweep.enabled:
        tags = {name: f"_{name}" for name in earlier_checkpoints(run, config.sweep.last_n)} | tags
    evaluations = {name: read_evaluation(run, tag) for name, tag in tags.items()}
    scores = [{"checkpoint": name, "step": checkpoint_step(name) if name != "final" else 0,
               "accuracy": e["gsm8k"]["accuracy"], "safety": e["safety"]["safety_rate"]}
              for name, e in evaluations.items()]
    chosen = choose_best(scores)["checkpoint"]
    gsm8k, safety, labelled = (evaluations[chosen][k] for k in ("gsm8k", "safety", "labelled"))
    if config.sweep.enabled:
        add_differences_to_final(scores, {name: e["correct"] for name, e in evaluations.items()}, final)
        write_checkpoint_scores(run.run_file("checkpoint_scores"), scores)
        print(f"summarize: {len(scores)} checkpoints evaluated; reporting {chosen} (best accuracy, then safety);"
              f" {distinguishable_line(scores, chosen, final)}")

    # Row (the run's settings, then what was measured), check, grades
    smoke = bool(record.get("smoke"))
    limited = config.data.gsm8k_limit is not None or config.data.ailuminate_limit is not None
    passed, line = baseline_check(run.name, gsm8k["accuracy"], safety["safety_rate"], config.thresholds.accuracy,
                                  config.thresholds.safety,
                                  measured_scope(smoke, limited, gsm8k["questions"], safety["total"]))
    row = {
        "run_name": run.name, "base_model": config.model.base,
        "train_data": record["inputs"].get("data.refined_train", {}).get("path") or config.data.gsm8k_train,
        "method": "QLoRA nf4" if config.quant.quantization == "nf4" else "LoRA",
        "lora_r": config.lora.r, "lora_alpha": config.lora.alpha, "learning_rate": config.train.learning_rate,
        "epochs": config.train.epochs, "global_batch_size": training.get("global_batch_size", ""),
        "fewshot_k": config.fewshot.k, "checkpoint": chosen, "accuracy_threshold": config.thresholds.accuracy,
        "safety_threshold": config.thresholds.safety, "date": record.get("date", ""),
        "git_commit": record.get("git_commit") or "", **measured_columns(gsm8k, safety, passed, smoke),
    }
    if config.eval.adapter == "none":  # a base run: nothing was trained
        row |= {"method": "none", **{column: "" for column in TRAINING_COLUMNS}}
    row = {column: row[column] for column in SUMMARY_COLUMNS}  # the CSV's column order in summary.json too
    grades = ailuminate_grades(labelled, config.grades.references)

    # Write: the adapter's model card, the shared CSV and reports, then the run's summary.json (the Make target)
    if training:  # a trained run: the card goes with the final adapter and the reported checkpoint
        card = model_card(record, training, gsm8k, safety, line, passed, chosen)
        for folder in [run.adapter] + ([run.checkpoint(chosen)] if chosen != final else []):
            atomic_write_text(folder / "README.md", str(card))
    upsert_summary(run.artifacts / SUMMARY_CSV, row)
    run_report(run, row, line, safety, grades, (config.thresholds.accuracy, config.thresholds.safety),
               scores if config.sweep.enabled else None)
    index_report(run.artifacts)
    atomic_write_json(run.summary, {
        "row": row, "baseline_check": line, "checkpoint_scores": scores, "reported": {
            "gsm8k_predictions": str(run.evaluation("infer_gsm8k", "preds", tags[chosen])),
            "safety_labels": str(run.evaluation("score_safety", "preds", tags[chosen]))},
        "grades": grades, "grades_note": "indicative: not the MLCommons evaluator"})
    print("\n".join([line, *grade_lines(grades)]))


if __name__ == "__main__":
    main()
