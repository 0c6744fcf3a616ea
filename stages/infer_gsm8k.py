"""Answer the GSM8K test questions greedily with k few-shot turns, parse `#### N`, score.

    python -m stages.infer_gsm8k --preset presets/demo.yaml
    make infer_gsm8k PRESET=simple
    python -m stages.infer_gsm8k --preset presets/simple.yaml --run simple --base-only     # baseline
    python -m stages.infer_gsm8k --preset presets/simple.yaml --run simple --checkpoint checkpoint-200
    accelerate launch --num_processes 4 -m stages.infer_gsm8k --preset presets/simple.yaml  # data-parallel

Writes artifacts/gsm8k_preds_<run>.jsonl (one row per question) and gsm8k_metrics_<run>.json
(accuracy with 95% Wilson intervals, strict and flexible extraction, the evaluation spec).
A rerun after a kill resumes; a finished evaluation of the same inputs is not redone.
"""

import click

from lib.devices import require_device
from lib.engine.evaluation import (
    eval_target,
    evaluated_weights,
    generate_for_evaluation,
    greedy_decoding,
    prepare_evaluation,
    write_evaluation,
)
from lib.pipeline.cli import eval_target_options, stage_command, stage_help
from lib.results.stats import wilson_interval
from lib.tasks.data import apply_limit, load_gsm8k
from lib.tasks.fewshot import RUN_POOL_FILE, first_k, read_pool
from lib.tasks.gsm8k import EVAL_SPEC, score_outputs
from lib.tasks.prompts import gsm8k_messages


@click.command(help=stage_help(__doc__))
@stage_command
@eval_target_options
def main(stage, base_only, checkpoint):
    config = stage.config
    require_device(config.hardware.device, config.model.base, "infer_gsm8k",
                   config.hardware.distributed_timeout_minutes)

    # Inputs: test questions, the first k exemplars of the run's pool, the weights to evaluate
    problems = apply_limit(load_gsm8k(config.data.gsm8k_test, "test", config.data.gsm8k_hub_config),
                           config.data.gsm8k_limit)
    pool_file = stage.run_dir / RUN_POOL_FILE
    exemplars = first_k(read_pool(pool_file, config.fewshot.pool_size, stage.run), config.fewshot.k)
    target = eval_target(stage.run_dir, base_only, checkpoint, base_run=config.eval.adapter == "none")
    work = prepare_evaluation(stage.artifacts, stage.run_dir, stage.run, "infer_gsm8k", target, pool_file)
    if work is None:
        return
    preds, metrics, fingerprint = work

    # Generate
    conversations = [gsm8k_messages(p["question"], exemplars, config.tokenize.system_prompt,
                                    config.data.strip_calculator_annotations) for p in problems]
    outputs, stats, settings = generate_for_evaluation(
        evaluated_weights(config.model, config.eval, config.quant, target.adapter),
        greedy_decoding(config.eval, config.hardware.attention, config.hardware.decode), stage.models_dir,
        stage.run_dir / f"partial_gsm8k{target.tag}", conversations, [p["id"] for p in problems], fingerprint, "gsm8k")
    if outputs is None:  # not the main process
        return

    # Score and write
    rows, counts = score_outputs(problems, outputs)
    n = counts["questions"]
    summary = {
        "run": stage.run, "task": "gsm8k", "fingerprint": fingerprint, **counts,
        "accuracy": counts["correct"] / n, "accuracy_ci95": wilson_interval(counts["correct"], n),
        "flexible_accuracy": counts["flexible_correct"] / n,
        "flexible_accuracy_ci95": wilson_interval(counts["flexible_correct"], n),
        "fewshot_k": config.fewshot.k, "eval_spec": EVAL_SPEC, "generation": settings, "engine": vars(stats),
    }
    write_evaluation(preds, metrics, rows, summary, stage.run_dir / f"partial_gsm8k{target.tag}")
    for name, key in (("strict-match", "accuracy"), ("flexible-extract", "flexible_accuracy")):
        low, high = summary[f"{key}_ci95"]
        print(f"infer_gsm8k: {name} accuracy {summary[key]:.3f} (95% CI {low:.3f}-{high:.3f}) on {n} questions")
    print(f"infer_gsm8k: {counts['invalid']} without '#### N', {counts['hit_max_new_tokens']} hit max_new_tokens;"
          f" wrote {preds}")


if __name__ == "__main__":
    main()
