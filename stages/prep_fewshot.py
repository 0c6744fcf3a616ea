"""Draw the fixed GSM8K few-shot pool once (seeded), or validate the one already there.

    python -m stages.prep_fewshot --preset presets/demo.yaml
    make prep_fewshot PRESET=simple

Writes fewshot.path (data/fewshot_gsm8k_fixed.jsonl for the real presets) when it is absent, with
a record of how it was drawn beside it (fewshot_gsm8k_fixed.draw.json: size, seed, train data); an
existing pool drawn otherwise is an error. Copies the pool into artifacts/run_<run>/fewshot.jsonl.
"""

import click

from lib.console import stage_help
from lib.io import atomic_write_jsonl
from lib.pipeline.cli import stage_command
from lib.tasks.data import load_gsm8k
from lib.tasks.fewshot import draw_record, ensure_pool


@click.command(help=stage_help(__doc__))
@stage_command
def main(stage):
    fewshot, data = stage.config.fewshot, stage.config.data

    pool, created = ensure_pool(
        fewshot.path,
        load_train=lambda: load_gsm8k(data.gsm8k_train, "train", data.gsm8k_hub_config),
        record=draw_record(fewshot.pool_size, fewshot.seed, data.gsm8k_train, data.gsm8k_hub_config),
    )
    atomic_write_jsonl(stage.run.pool, pool)

    action = f"drew {len(pool)} examples with seed {fewshot.seed} into" if created else "reusing the fixed pool at"
    print(f"prep_fewshot: {action} {fewshot.path} (delete it to draw again);"
          f" run copy in {stage.run.pool}")


if __name__ == "__main__":
    main()
