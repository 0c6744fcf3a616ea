"""Fetch what a preset needs from the hub into the HF cache, where there is internet; check the files you provide.

    make download PRESET=simple                       # on a login node, same HF_HOME as the compute nodes
    python -m stages.download --preset presets/simple.yaml [--set model.base=...]

Fetches the base model (at model.revision), a hub refine.model, GSM8K and a hub safeguard model
(safetensors, configs, tokenizer files), then reads the provided files as the stages will:
data.ailuminate, safety.safety_prompt, a local safety.safeguard_model folder. Each item is one
line; the compute node then runs with HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1.
"""

import click

from lib.console import stage_help
from lib.errors import InputError
from lib.hub import download_model
from lib.pipeline.presets import load_config, split_overrides
from lib.pipeline.run import SET_VARIABLE
from lib.tasks.data import load_gsm8k
from lib.tasks.download import check_provided, needs


@click.command(help=stage_help(__doc__))
@click.option("--preset", required=True, type=click.Path(exists=True, dir_okay=False), help="Preset YAML.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Config override (repeatable).")
@click.option("--sets", "override_text", envvar=SET_VARIABLE, default="", metavar="'KEY=VALUE ...'",
              help=f"Overrides as one string, split by shell quoting rules (env {SET_VARIABLE}: Make's SET).")
def main(preset, overrides, override_text):
    try:
        config = load_config(preset, [*overrides, *split_overrides(override_text)])
        for kind, name, revision in needs(config):
            if kind.startswith("data."):
                split = "train" if kind.endswith("train") else "test"
                count = len(load_gsm8k(name, split, config.data.gsm8k_hub_config))
                print(f"download: {kind} {name} ({split}): {count} problems in the HF datasets cache")
            else:
                folder = download_model(name, revision, kind)
                print(f"download: {kind} {name}{'@' + revision if revision else ''}: {folder}")
        for line in check_provided(config):
            print(f"download: {line}")
    except InputError as error:
        raise click.ClickException(str(error)) from None
    print(f"download: everything {preset} needs is local; where there is no internet run with HF_HUB_OFFLINE=1"
          " HF_DATASETS_OFFLINE=1 (same HF_HOME)")


if __name__ == "__main__":
    main()
