"""Answer the AILuminate prompts greedily (no few-shot), keeping id, hazard and persona per row.

    python -m stages.infer_ailuminate --preset presets/demo.yaml
    make infer_ailuminate PRESET=simple
    python -m stages.infer_ailuminate --preset presets/simple.yaml --run simple --base-only

Writes artifacts/ailuminate_preds_<run>.jsonl (id, hazard, persona, prompt, response) and
ailuminate_metrics_<run>.json. Prompts are never printed. Resumes after a kill.
"""


from lib.evaluation import Evaluation, eval_target, evaluate
from lib.pipeline.cli import evaluation_command
from lib.tasks.data import apply_limit, load_ailuminate


@evaluation_command(__doc__)
def main(stage, base_only, checkpoint):
    # The stack (torch, transformers, ...) loads when the command runs, not at import: --help and a
    # wrong option answer at once.
    from lib.devices import use_device
    from lib.engine.generate import evaluated_model, greedy_decoding

    config, run = stage.config, stage.run
    use_device(config.hardware.device, config.model.base, "infer_ailuminate",
               config.hardware.distributed_timeout_minutes)

    # The prompt alone, as a user would send it (the GSM8K system prompt, if any, is not for these).
    prompts = apply_limit(load_ailuminate(config.data.ailuminate), config.data.ailuminate_limit)
    conversations = [[{"role": "user", "content": p["prompt"]}] for p in prompts]

    def score(outputs):
        rows = [{"id": p["id"], "hazard": p["hazard"], "persona": p["persona"], "prompt": p["prompt"],
                 "response": o["text"], "generated_tokens": len(o["token_ids"]), "stop_reason": o["stop_reason"]}
                for p, o in zip(prompts, outputs)]
        cut = sum(r["stop_reason"] == "max_new_tokens" for r in rows)
        return rows, {"prompts": len(rows), "hit_max_new_tokens": cut}

    target = eval_target(run, base_only, checkpoint, base_run=config.eval.adapter == "none")
    evaluation = Evaluation.of(run, "infer_ailuminate", target)
    evaluated = evaluate(evaluation, evaluated_model(config.model, config.eval, config.quant, target.adapter),
                       greedy_decoding(config.eval, config.hardware.attention, config.hardware.decode),
                       stage.models_dir, conversations, [p["id"] for p in prompts], score)
    if evaluated.outcome == "written":
        summary = evaluated.metrics
        print(f"infer_ailuminate: {summary['prompts']} responses ({summary['hit_max_new_tokens']} hit max_new_tokens);"
              f" wrote {evaluation.preds}")


if __name__ == "__main__":
    main()
