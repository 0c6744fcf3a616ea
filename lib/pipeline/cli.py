"""What every stage script shares: the run options, config loading and one-line errors."""

from __future__ import annotations

import functools
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import click

from lib.errors import InputError
from lib.pipeline.artifacts import MODELS_FOLDER, RunPaths
from lib.pipeline.config import Config
from lib.pipeline.run import resolve_run, run_options, with_remembered_overrides, write_run_config


@dataclass
class Stage:
    """What a stage works with: the run's resolved config, the run's paths, the converted models' folder."""

    config: Config
    run: RunPaths  # every path of the run, by what it holds (lib/pipeline/artifacts.py)
    models_dir: Path  # where embedded models are converted to (default <artifacts>/models)


def quiet_upstream_messages() -> None:
    """The console shows only lines a user can act on; two upstream messages are not such lines.
    Installed by the stages package (stages/__init__.py) before a command imports anything that
    would print one (bitsandbytes' message comes at its import); importing lib/ changes nothing:
    - bitsandbytes 0.50 (backends/cpu/ops.py), on CPUs with AVX512-BF16, tries to fetch an optional
      kernel from the hub through the `kernels` package and logs a warning when it cannot; its own
      CPU kernel is then used, which is what runs here (offline, no `kernels`).
    - peft 0.21 (prepare_model_for_kbit_training, PeftModel) calls the pre-v5 names
      `gradient_checkpointing_enable` / `is_gradient_checkpointing`, which transformers 5 deprecates
      with a FutureWarning on every call. Our own code calls `activation_checkpointing_enable`."""
    bnb = logging.getLogger("bitsandbytes.backends.cpu.ops")
    if not any(getattr(f, "__name__", "") == "_not_kernels_community" for f in bnb.filters):
        bnb.addFilter(_not_kernels_community)
    warnings.filterwarnings("ignore", message=r"`(gradient_checkpointing_enable|is_gradient_checkpointing)` is"
                            r" deprecated", category=FutureWarning)


def _not_kernels_community(record: logging.LogRecord) -> bool:
    return "kernels-community" not in record.getMessage()


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
            paths = write_run_config(config, run, artifacts, identity, reconfigure)
            models = Path(models_dir) if models_dir else Path(artifacts) / MODELS_FOLDER
            return func(Stage(config, paths, models), **options)
        except InputError as err:
            raise click.ClickException(with_remembered_overrides(str(err), run, overrides, artifacts)) from None

    return wrapper


def eval_target_options(func):
    """--base-only / --checkpoint: what an evaluation stage evaluates instead of the final adapter."""
    func = click.option("--checkpoint", default=None, metavar="NAME",
                        help="Evaluate run_<run>/checkpoints/NAME instead of the final adapter.")(func)
    return click.option("--base-only", is_flag=True,
                        help="Evaluate the base model without the adapter (a baseline).")(func)
