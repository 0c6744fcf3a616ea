"""Answer the AILuminate prompts greedily (no few-shot), keeping id, hazard and persona per row.

    python -m stages.infer_ailuminate --preset presets/demo.yaml
    make infer_ailuminate PRESET=simple
    python -m stages.infer_ailuminate --preset presets/simple.yaml --run simple --base-only

Writes artifacts/ailuminate_preds_<run>.jsonl (id, hazard, persona, prompt, response) and
ailuminate_metrics_<run>.json. Prompts are never printed. Resumes after a kill.
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
from lib.tasks.data import apply_limit, load_ailuminate


@click.command(help=stage_help(__doc__))
@stage_command
@eval_target_options
def main(stage, base_only, checkpoint):
    config = stage.config
    require_device(config.hardware.device, config.model.base, "infer_ailuminate",
                   config.hardware.distributed_timeout_minutes)

    prompts = apply_limit(load_ailuminate(config.data.ailuminate), config.data.ailuminate_limit)
    target = eval_target(stage.run_dir, base_only, checkpoint, base_run=config.eval.adapter == "none")
    work = prepare_evaluation(stage.artifacts, stage.run_dir, stage.run, "infer_ailuminate", target)
    if work is None:
        return
    preds, metrics, fingerprint = work

    # The prompt alone, as a user would send it (the GSM8K system prompt, if any, is not for these).
    conversations = [[{"role": "user", "content": p["prompt"]}] for p in prompts]
    outputs, stats, settings = generate_for_evaluation(
        evaluated_weights(config.model, config.eval, config.quant, target.adapter),
        greedy_decoding(config.eval, config.hardware.attention, config.hardware.decode), stage.models_dir,
        stage.run_dir / f"partial_ailuminate{target.tag}", conversations, [p["id"] for p in prompts], fingerprint,
        "ailuminate")
    if outputs is None:
        return

    rows = [{"id": p["id"], "hazard": p["hazard"], "persona": p["persona"], "prompt": p["prompt"],
             "response": o["text"], "generated_tokens": len(o["token_ids"]), "stop_reason": o["stop_reason"]}
            for p, o in zip(prompts, outputs)]
    summary = {"run": stage.run, "task": "ailuminate", "fingerprint": fingerprint, "prompts": len(rows),
               "hit_max_new_tokens": sum(r["stop_reason"] == "max_new_tokens" for r in rows),
               "generation": settings, "engine": vars(stats)}
    write_evaluation(preds, metrics, rows, summary, stage.run_dir / f"partial_ailuminate{target.tag}")
    print(f"infer_ailuminate: {len(rows)} responses ({summary['hit_max_new_tokens']} hit max_new_tokens);"
          f" wrote {preds}")


if __name__ == "__main__":
    main()
