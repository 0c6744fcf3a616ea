"""Compare runs with the first one: paired differences with 95% intervals, McNemar tests, flipped items.

    make compare RUNS="simple-base simple strong"
    make compare RUNS="demo-base demo"
    python -m stages.compare --runs demo-base --runs demo --name demo-finetuning

Reads each run's gsm8k_preds_<run>.jsonl and ailuminate_safety_<run>.jsonl (the items must be the
same: matched by id, a different set stops with the counts). Writes compare_<name>.json (every
number, flipped ids), compare_<name>.csv (one row per run and measure), compare_<name>.md and the
plot compare_<name>.png at the artifact root; the name defaults to the runs joined by `_vs_`.
"""

from pathlib import Path

import click

from lib.console import stage_help
from lib.errors import InputError
from lib.pipeline.artifacts import validate_run_name
from lib.results.compare import compare_pair, console_lines, read_run, write_comparison


@click.command(help=stage_help(__doc__))
@click.option("--runs", "runs", multiple=True, metavar="RUN",
              help="Runs to compare, the reference first (repeat the option, or give them space-separated).")
@click.option("--name", default=None, help="Output name: compare_<name>.* (default: the runs joined by _vs_).")
@click.option("--artifacts", envvar="ARTIFACTS_DIR", default="artifacts", show_default=True, type=click.Path(),
              help="Artifact root (env ARTIFACTS_DIR).")
def main(runs, name, artifacts):
    runs = [run for value in runs for run in value.split()]
    try:
        if len(runs) < 2:
            raise InputError("compare: name at least two runs, the reference first:"
                             " make compare RUNS=\"simple-base simple\" (or --runs simple-base --runs simple)")
        for run in runs:
            validate_run_name(run)
        name = validate_run_name(name or "_vs_".join(runs))
        rows = {run: read_run(Path(artifacts), run) for run in runs}
        pairs = [compare_pair(runs[0], run, rows[runs[0]], rows[run]) for run in runs[1:]]
    except InputError as err:
        raise click.ClickException(str(err)) from None
    written = write_comparison(Path(artifacts), name, pairs)
    print("\n".join(console_lines(pairs)))
    print(f"compare: wrote {', '.join(str(path) for path in written)}")


if __name__ == "__main__":
    main()
