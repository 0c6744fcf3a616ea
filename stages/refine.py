"""Build a training file by rejection sampling: the model's own correct, distinct solutions.

    make refine PRESET=demo                      # -> artifacts/run_demo/gsm8k_train_self-instruct.jsonl
    make strong                                  # builds data/gsm8k_train_self-instruct.jsonl first when absent
    python -m stages.refine --preset presets/strong.yaml --run strong --set refine.samples_per_question=8
    accelerate launch --num_processes 4 -m stages.refine --preset presets/strong.yaml --run strong

Samples refine.samples_per_question solutions per GSM8K train question (the few-shot pool left
out) with the run's k-shot chat prompt, from the base model (or refine.model), each sample from
its own seed. Keeps those that end properly with the right `#### N` answer and a new sequence of
equations (lib/training/refine.py), at most refine.max_per_question, plus GSM8K's own solution
(refine.keep_original). Writes data.refined_train (or run_<run>/gsm8k_train_self-instruct.jsonl)
with rows {id, question, answer, source}, and run_<run>/refine_metrics.json. A file you provide
there is used as is, never overwritten. A rerun after a kill resumes.
"""

from pathlib import Path

import click

from lib.console import stage_help
from lib.pipeline.cli import stage_command
from lib.pipeline.config import without_runtime_keys
from lib.tasks.data import apply_limit, load_gsm8k
from lib.tasks.fewshot import first_k, read_pool, remove_pool
from lib.tasks.prompts import gsm8k_messages
from lib.training.refine import (
    check_no_leakage,
    generation_metrics,
    output_state,
    sample_seed,
    sampling_fingerprint,
    select_all,
    summary_line,
    write_refined,
)


@click.command(help=stage_help(__doc__))
@stage_command
def main(stage):
    # The stack (torch, transformers, ...) loads when the command runs, not at import: --help and a
    # wrong option answer at once.
    from lib.devices import use_device
    from lib.engine.generate import Decoding, ModelSpec, generate_answers
    from lib.engine.sampling import Sampling

    config, refine = stage.config, stage.config.refine
    run = stage.run
    output = run.refined_output(config.data.refined_train)
    # The sampler: refine.model (at its default revision) or the run's base.
    sampler = {"base": refine.model or config.model.base, "revision": None if refine.model else config.model.revision,
               "trust_remote_code": config.model.trust_remote_code}
    use_device(config.hardware.device, sampler["base"], "refine",
               config.hardware.distributed_timeout_minutes)
    settings = {"model": sampler, "train": config.data.gsm8k_train, "test": config.data.gsm8k_test,
                "k": config.fewshot.k, "system_prompt": config.tokenize.system_prompt, "dtype": config.eval.dtype,
                "strip": config.data.strip_calculator_annotations, "stop_strings": config.eval.stop_strings,
                **without_runtime_keys({"refine": vars(refine)})}  # the rule every stage's inputs follow
    fingerprint = sampling_fingerprint(settings, run.pool, Path(config.data.gsm8k_train), Path(config.data.gsm8k_test))
    state = output_state(output, fingerprint)
    if state in ("provided", "current"):
        print(f"refine: {output} is {'your file, used as is' if state == 'provided' else 'up to date'}")
        return

    # Questions: GSM8K train minus the pool; the prompts as at evaluation, one per sample
    pool = read_pool(run.pool, config.fewshot.pool_size, run.name)
    train = load_gsm8k(config.data.gsm8k_train, "train", config.data.gsm8k_hub_config)
    problems = apply_limit(remove_pool(train, pool)[0], refine.question_limit)
    test = load_gsm8k(config.data.gsm8k_test, "test", config.data.gsm8k_hub_config)
    check_no_leakage(problems, [p["question"] for p in test], [p["question"] for p in pool], str(output))
    exemplars = first_k(pool, config.fewshot.k)
    samples = refine.samples_per_question
    conversations = [gsm8k_messages(p["question"], exemplars, config.tokenize.system_prompt,
                                    config.data.strip_calculator_annotations) for p in problems for _ in range(samples)]
    ids = [f"{p['id']}#{j}" for p in problems for j in range(samples)]
    seeds = [sample_seed(refine.seed, p["id"], j) for p in problems for j in range(samples)]

    # Sample (resumable, data-parallel), then filter each question's samples
    sampler_model = ModelSpec(sampler["base"], sampler["revision"], sampler["trust_remote_code"], None, "merged",
                      config.eval.dtype)
    decoding = Decoding(refine.max_new_tokens, refine.batch_size, refine.chunk_size, tuple(config.eval.stop_strings),
                        Sampling(refine.temperature, refine.top_p), config.hardware.attention, config.hardware.decode)
    outputs, stats, _ = generate_answers(sampler_model, decoding, stage.models_dir, run.partial("refine"),
                                         conversations, ids, fingerprint, "refine", seeds)
    if outputs is None:  # not the main process
        return
    rows, metrics = select_all(problems, outputs, samples, refine.max_per_question, refine.keep_original,
                               config.data.strip_calculator_annotations)
    metrics.update(generation_metrics(stats.generated_tokens, stats.seconds))

    # Write: metrics, the file, then refine's record beside it
    write_refined(output, rows, metrics, run, fingerprint)
    print(summary_line(metrics, str(output)))


if __name__ == "__main__":
    main()
