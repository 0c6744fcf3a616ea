"""List the checkpoints a run's sweep evaluates (Make's `sweep` target evaluates each).

    python -m stages.sweep --run medium       # prints e.g. "checkpoint-400 checkpoint-600"
    make sweep RUN=medium                     # evaluates them (presets with sweep.enabled)

Prints the `sweep.last_n - 1` newest checkpoints before the final adapter (which is evaluated as
the run itself), oldest first, on one line; nothing when the run's sweep is off.
"""

from pathlib import Path

import click

from lib.console import stage_help
from lib.errors import InputError
from lib.pipeline.artifacts import RunPaths
from lib.pipeline.run import resolve_run, run_options
from lib.results.sweep import earlier_checkpoints


@click.command(help=stage_help(__doc__))
@run_options
def main(preset, run, overrides, smoke, reconfigure, artifacts):
    try:
        run, config, _ = resolve_run(run, preset, overrides, smoke, artifacts, reconfigure)
    except InputError as err:
        raise click.ClickException(str(err)) from None
    if config.sweep.enabled:
        print(" ".join(earlier_checkpoints(RunPaths(Path(artifacts), run), config.sweep.last_n)))


if __name__ == "__main__":
    main()
