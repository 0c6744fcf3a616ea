"""What every stage script shares: the run options, config loading and one-line errors."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import click

from lib.errors import InputError
from lib.pipeline.config import Config
from lib.pipeline.run import resolve_run, run_options, with_remembered_overrides, write_run_config


@dataclass
class Stage:
    config: Config
    run: str
    run_dir: Path
    artifacts: Path
    models_dir: Path  # where embedded models are converted to (default <artifacts>/models)


def stage_help(docstring: str) -> str:
    """A stage module's docstring as its --help text: click rewraps paragraphs, so each block of
    indented example commands is marked to be kept as written."""
    paragraphs = docstring.strip().split("\n\n")
    return "\n\n".join("\b\n" + block if block.startswith("    ") else block for block in paragraphs)


def stage_command(func):
    """Add the run options (lib.pipeline.run.run_options) and --models-dir, resolve the run's config, check it
    against the run's record and record it, and turn an InputError anywhere in the stage into one
    `Error: ...` message with exit code 1."""

    @run_options
    @click.option("--models-dir", envvar="MODELS_DIR", default=None, type=click.Path(),
                  help="Converted embedded models (env MODELS_DIR; default <artifacts>/models).")
    @functools.wraps(func)
    def wrapper(preset, run, overrides, smoke, reconfigure, artifacts, models_dir, **options):
        try:
            run, config, identity = resolve_run(run, preset, overrides, smoke, artifacts, reconfigure)
            folder = write_run_config(config, run, artifacts, identity, reconfigure)
            models = Path(models_dir) if models_dir else Path(artifacts) / "models"
            return func(Stage(config, run, folder, Path(artifacts), models), **options)
        except InputError as err:
            raise click.ClickException(with_remembered_overrides(str(err), run, overrides, artifacts)) from None

    return wrapper


def eval_target_options(func):
    """--base-only / --checkpoint: what an evaluation stage evaluates instead of the final adapter."""
    func = click.option("--checkpoint", default=None, metavar="NAME",
                        help="Evaluate run_<run>/checkpoints/NAME instead of the final adapter.")(func)
    return click.option("--base-only", is_flag=True,
                        help="Evaluate the base model without the adapter (a baseline).")(func)
