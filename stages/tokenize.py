"""Tokenize the GSM8K training data with the model's chat template and assistant-only labels.

    python -m stages.tokenize --preset presets/demo.yaml
    make tokenize PRESET=simple

Removes the few-shot pool from the training data first (matched by normalised question), so
no exemplar is trained on. Writes artifacts/run_<run>/train_tokenized.jsonl (id, input_ids,
labels with -100 outside the assistant turn) and train_tokenized.meta.json (counts, lengths).
"""

import click

from lib.console import stage_help
from lib.io import atomic_write_json, atomic_write_jsonl
from lib.pipeline.cli import stage_command
from lib.tasks.data import apply_limit, load_gsm8k, training_source
from lib.tasks.fewshot import read_pool, remove_pool
from lib.training.sft_data import tokenize_problems


@click.command(help=stage_help(__doc__))
@stage_command
def main(stage):
    # The stack (torch, transformers, ...) loads when the command runs, not at import: --help and a
    # wrong option answer at once.
    from lib.models import load_tokenizer

    config = stage.config

    # Load data, leave out the few-shot pool
    source = training_source(config.data.gsm8k_train, config.data.refined_train)
    problems = load_gsm8k(source, "train", config.data.gsm8k_hub_config,
                          what="data.refined_train" if config.data.refined_train else None)
    pool = read_pool(stage.run.pool, config.fewshot.pool_size, stage.run.name)
    kept, removed = remove_pool(problems, pool)
    kept = apply_limit(kept, config.data.train_limit)

    # Render and tokenize
    tokenizer = load_tokenizer(config.model.base, stage.models_dir, config.model.revision,
                               config.model.trust_remote_code)
    rows, stats = tokenize_problems(tokenizer, kept, config.tokenize.max_seq_len, config.tokenize.system_prompt,
                                    config.data.strip_calculator_annotations)

    # Write the examples, then their metadata
    meta = {"source": source, "records_read": len(problems), "fewshot_removed": removed,
            "train_limit": config.data.train_limit, "base_model": config.model.base, **stats}
    atomic_write_jsonl(stage.run.tokenized, rows)
    atomic_write_json(stage.run.tokenized_meta, meta)
    lengths = ", ".join(f"{k} {v}" for k, v in stats["length_percentiles"].items())
    print(f"tokenize: {len(problems)} read from {source}, {removed} few-shot removed, {stats['examples']} written"
          f" ({stats['truncated_at_max_seq_len']} truncated at {stats['max_seq_len']},"
          f" {stats['dropped_without_labels']} dropped); tokens {lengths}")


if __name__ == "__main__":
    main()
