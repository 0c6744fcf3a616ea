"""What every stage script shares: the run options, config loading and one-line errors."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import click

from lib.config import Config, load_config
from lib.errors import InputError
from lib.run import write_run_config


@dataclass
class Stage:
    config: Config
    run: str
    run_dir: Path
    artifacts: Path
    models_dir: Path  # where embedded models are converted to (default <artifacts>/models)


def stage_command(func):
    """Add --preset/--run/--set/--smoke/--artifacts/--models-dir, resolve the config, record it, and turn an
    InputError anywhere in the stage into one `Error: ...` line with exit code 1."""

    @click.option("--preset", default="presets/demo.yaml", show_default=True, type=click.Path(),
                  help="Preset YAML.")
    @click.option("--run", "run", default=None, help="Run name (default: the preset's file name).")
    @click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE",
                  help="Override one config key (repeatable), e.g. --set train.epochs=2.")
    @click.option("--smoke", is_flag=True, help="Use the preset's smoke sizes (train/eval limits).")
    @click.option("--artifacts", envvar="ARTIFACTS_DIR", default="artifacts", show_default=True,
                  type=click.Path(), help="Artifact root (env ARTIFACTS_DIR).")
    @click.option("--models-dir", envvar="MODELS_DIR", default=None, type=click.Path(),
                  help="Converted embedded models (env MODELS_DIR; default <artifacts>/models).")
    @functools.wraps(func)
    def wrapper(preset, run, overrides, smoke, artifacts, models_dir, **options):
        try:
            run = run or Path(preset).stem
            config = load_config(preset, overrides, smoke=smoke)
            folder = write_run_config(config, run, artifacts, preset, overrides, smoke)
            models = Path(models_dir) if models_dir else Path(artifacts) / "models"
            return func(Stage(config, run, folder, Path(artifacts), models), **options)
        except InputError as err:
            raise click.ClickException(str(err)) from None

    return wrapper


def eval_target_options(func):
    """--base-only / --checkpoint: what an evaluation stage evaluates instead of the final adapter."""
    func = click.option("--checkpoint", default=None, metavar="NAME",
                        help="Evaluate run_<run>/checkpoints/NAME instead of the final adapter.")(func)
    return click.option("--base-only", is_flag=True, help="Evaluate the base model without the adapter (a baseline).")(func)
