"""What every stage script shares: the run options, config loading and one-line errors."""

from __future__ import annotations

import functools
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path

import click

from lib.console import stage_help
from lib.errors import InputError
from lib.io import folder_problem
from lib.pipeline.artifacts import MODELS_FOLDER, RunPaths
from lib.pipeline.config import Config
from lib.pipeline.lock import RunLock
from lib.pipeline.run import resolve_run, run_name, run_options, with_remembered_overrides, write_run_config


@dataclass
class Stage:
    """What a stage works with: the run's resolved config, the run's paths, the converted models' folder."""

    config: Config
    run: RunPaths  # every path of the run, by what it holds (lib/pipeline/artifacts.py)
    models_dir: Path  # where embedded models are converted to (default <artifacts>/models)


def stage_command(func):
    """Add the run options (lib.pipeline.run.run_options) and --models-dir, resolve the run's config, check it
    against the run's record and record it, and turn an InputError anywhere in the stage into one
    `Error: ...` message with exit code 1. What the stage's parts asked for at its end
    (`when_stage_ends_well`) runs after its work when it ends well."""

    @run_options
    @click.option("--models-dir", envvar="MODELS_DIR", default=None, type=click.Path(),
                  help="Converted embedded models (env MODELS_DIR; default <artifacts>/models).")
    @functools.wraps(func)
    def wrapper(preset, run, overrides, smoke, reconfigure, artifacts, models_dir, **options):
        try:
            named = RunPaths(Path(artifacts), run_name(run, preset))
            if (problem := folder_problem(artifacts, "ARTIFACTS")) is not None:
                raise InputError(problem)
            with RunLock(named.lock, named.name):  # one command at a time writes a run
                run, config, identity = resolve_run(run, preset, overrides, smoke, artifacts, reconfigure)
                paths = write_run_config(config, run, artifacts, identity, reconfigure)
                models = Path(models_dir) if models_dir else Path(artifacts) / MODELS_FOLDER
                at_end: list[Callable[[], None]] = []
                token = _AT_STAGE_END.set(at_end)
                try:
                    result = func(Stage(config, paths, models), **options)
                    for action in at_end:
                        action()
                finally:
                    _AT_STAGE_END.reset(token)
                return result
        except InputError as err:
            raise click.ClickException(with_remembered_overrides(str(err), run, overrides, artifacts)) from None

    return wrapper


# While a stage command runs: what its parts asked to run at its end (none outside a stage command)
_AT_STAGE_END: ContextVar[list[Callable[[], None]] | None] = ContextVar("at_stage_end", default=None)


def when_stage_ends_well(action: Callable[[], None]) -> None:
    """Run `action` once the running stage's work is done, when nothing failed (a failed rank's peers
    are not waited for). lib.devices ends a launch's process group this way: this layer loads no ML
    library. Outside a stage command the caller owns what it started, and nothing is recorded."""
    actions = _AT_STAGE_END.get()
    if actions is not None and action not in actions:
        actions.append(action)


def eval_target_options(func):
    """--base-only / --checkpoint: what an evaluation stage evaluates instead of the final adapter."""
    func = click.option("--checkpoint", default=None, metavar="NAME",
                        help="Evaluate run_<run>/checkpoints/NAME instead of the final adapter.")(func)
    return click.option("--base-only", is_flag=True,
                        help="Evaluate the base model without the adapter (a baseline).")(func)


def evaluation_command(docstring: str):
    """An evaluation stage's command: its --help from `docstring`, the run options (`stage_command`)
    and what it evaluates (`eval_target_options`)."""
    def command(func):
        return click.command(help=stage_help(docstring))(stage_command(eval_target_options(func)))

    return command
