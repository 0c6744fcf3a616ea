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


from lib.evaluation import Evaluation, eval_target, evaluate
from lib.pipeline.cli import evaluation_command
from lib.results.stats import wilson_interval
from lib.tasks.data import apply_limit, load_gsm8k
from lib.tasks.fewshot import first_k, read_pool
from lib.tasks.gsm8k import EVAL_SPEC, score_outputs
from lib.tasks.prompts import gsm8k_messages


@evaluation_command(__doc__)
def main(stage, base_only, checkpoint):
    # The stack (torch, transformers, ...) loads when the command runs, not at import: --help and a
    # wrong option answer at once.
    from lib.devices import use_device
    from lib.engine.generate import evaluated_model, greedy_decoding

    config, run = stage.config, stage.run
    use_device(config.hardware.device, config.model.base, "infer_gsm8k",
               config.hardware.distributed_timeout_minutes)

    # The prompts: the test questions after the first k exemplars of the run's pool
    problems = apply_limit(load_gsm8k(config.data.gsm8k_test, "test", config.data.gsm8k_hub_config),
                           config.data.gsm8k_limit)
    exemplars = first_k(read_pool(run.pool, config.fewshot.pool_size, run.name), config.fewshot.k)
    conversations = [gsm8k_messages(p["question"], exemplars, config.tokenize.system_prompt,
                                    config.data.strip_calculator_annotations) for p in problems]

    def score(outputs):
        rows, counts = score_outputs(problems, outputs)
        n = counts["questions"]
        return rows, {
            **counts, "accuracy": counts["correct"] / n, "accuracy_ci95": wilson_interval(counts["correct"], n),
            "flexible_accuracy": counts["flexible_correct"] / n,
            "flexible_accuracy_ci95": wilson_interval(counts["flexible_correct"], n),
            "fewshot_k": config.fewshot.k, "eval_spec": EVAL_SPEC}

    # The weights, then generate, score and write (nothing when already made from these inputs)
    target = eval_target(run, base_only, checkpoint, base_run=config.eval.adapter == "none")
    evaluation = Evaluation.of(run, "infer_gsm8k", target, run.pool)
    evaluated = evaluate(evaluation, evaluated_model(config.model, config.eval, config.quant, target.adapter),
                       greedy_decoding(config.eval, config.hardware.attention, config.hardware.decode),
                       stage.models_dir, conversations, [p["id"] for p in problems], score)
    if evaluated.outcome != "written":
        return
    summary = evaluated.metrics
    for name, key in (("strict-match", "accuracy"), ("flexible-extract", "flexible_accuracy")):
        low, high = summary[f"{key}_ci95"]
        print(f"infer_gsm8k: {name} accuracy {summary[key]:.3f} (95% CI {low:.3f}-{high:.3f}) on"
              f" {summary['questions']} questions")
    print(f"infer_gsm8k: {summary['invalid']} without '#### N', {summary['hit_max_new_tokens']} hit max_new_tokens;"
          f" wrote {evaluation.preds}")


if __name__ == "__main__":
    main()
