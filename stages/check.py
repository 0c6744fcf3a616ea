"""Check every input a run's remaining stages will read, before any of them works (the preflight).

    make check PRESET=simple                  # before the GPU hour: everything `make simple` will need
    make check RUN=medium                     # an existing run: what its missing outputs still need
    python -m stages.check --preset presets/strong.yaml --goal train

Reads the resolved config and, for the stages whose outputs are not there yet, checks the data
files (as the stages read them), the safeguard folder and its format, the Safety Guidelines
prompt, the trackers in train.report_to, and each hub model or dataset: in the HF cache, or
reachable with the token there is (gated repositories included). Prints one `Error:` line per
problem, all at once, and exits 1; writes nothing. Make runs it with --record before the stages
of every chain target, so `make simple` stops here too (and under `make -n` with --dry-run-params:
the plan of the run as this call would record it, with nothing of the run written).
"""

from pathlib import Path

import click

from lib.checks.preflight import GOALS, problems, stages_to_run
from lib.console import stage_help
from lib.errors import InputError
from lib.io import folder_problem
from lib.pipeline.artifacts import RunPaths
from lib.pipeline.lock import RunLock
from lib.pipeline.params import write_dry_run_params
from lib.pipeline.run import resolve_run, run_name, run_options, with_remembered_overrides, write_run_config


@click.command(help=stage_help(__doc__))
@run_options
@click.option("--goal", "goals", multiple=True, type=click.Choice(GOALS),
              help="The Make targets to check for (repeatable; default: check, the whole chain; with --record: none).")
@click.option("--record", is_flag=True,
              help="Record the run first (run.json, the resolved config, params/): what Make does before any stage.")
@click.option("--dry-run-params", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="With --record: write nothing of the run; what params/ would become goes here (make -n).")
def main(preset, run, overrides, smoke, reconfigure, artifacts, goals, record, dry_run_params):
    try:
        named = RunPaths(Path(artifacts), run_name(run, preset))
        if (problem := folder_problem(artifacts, "ARTIFACTS")) is not None:  # every stage writes there
            raise InputError(problem)
        if record and dry_run_params:
            run, config, identity = resolve_run(run, preset, overrides, smoke, artifacts, reconfigure)
            write_dry_run_params(config, named, dry_run_params)
            paths = named
        elif record:  # recording writes the run: not while another command does
            with RunLock(named.lock, named.name):
                run, config, identity = resolve_run(run, preset, overrides, smoke, artifacts, reconfigure)
                paths = write_run_config(config, run, artifacts, identity, reconfigure)
        else:
            run, config, identity = resolve_run(run, preset, overrides, smoke, artifacts, reconfigure)
            paths = named
    except InputError as err:
        raise click.ClickException(with_remembered_overrides(str(err), run, overrides, artifacts)) from None
    goals = list(goals) or ([] if record else ["check"])
    stages = stages_to_run(goals, config, paths)
    found = problems(config, stages, Path(identity.preset).stem)
    for line in found:
        click.echo(f"Error: {with_remembered_overrides(line, run, overrides, artifacts)}", err=True)
    if found and dry_run_params:  # make -n: say where the real call stops, and still show its plan
        click.echo("check: the real call stops at the problems above; below is what runs once they are fixed",
                   err=True)
    elif found:
        raise SystemExit(1)
    if not record:
        print(f"check: run {run!r}: the inputs of {', '.join(stages) or 'no remaining stage'} are usable")


if __name__ == "__main__":
    main()
