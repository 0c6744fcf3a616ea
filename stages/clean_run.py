"""Delete one run's folder and its evaluation files: the only command that deletes work.

    make clean-run RUN=demo
    python -m stages.clean_run --run demo

Removes artifacts/run_<run>/ and the files at the artifact root that belong to that run by exact
name (gsm8k_preds_<run>.jsonl, its _base and _checkpoint-<step> evaluations, ...), and its row of
summary.csv (artifacts/report.md is rewritten without it); run `demo_2` or `demo_base` is never
touched. Prints each path it removes. `make clean-run` needs RUN named: it never guesses.
"""

import contextlib
import shutil
from pathlib import Path

import click

from lib.console import stage_help
from lib.errors import InputError
from lib.pipeline.artifacts import REPORT_FILE, SUMMARY_CSV, RunPaths
from lib.pipeline.lock import RunLock
from lib.results.report import index_report
from lib.results.summary import remove_summary_row


@click.command(help=stage_help(__doc__))
@click.option("--run", "run", required=True, help="The run whose artifacts are removed.")
@click.option("--artifacts", envvar="ARTIFACTS_DIR", default="artifacts", show_default=True, help="Artifact root.")
def main(run, artifacts):
    try:
        named = RunPaths(Path(artifacts), run)
        # Not while another command writes the run (a run without a folder has no lock to take).
        with RunLock(named.lock, run) if named.folder.is_dir() else contextlib.nullcontext():
            paths = named.files()
            for path in paths:
                shutil.rmtree(path) if path.is_dir() else path.unlink()
                print(f"removed {path}")
    except InputError as err:
        raise click.ClickException(str(err)) from None
    summary = Path(artifacts) / SUMMARY_CSV
    if remove_summary_row(summary, run):  # and the index of runs no longer links to its report
        index_report(Path(artifacts))
        print(f"removed run {run!r}'s row from {summary} and {Path(artifacts) / REPORT_FILE}")
    elif not paths:
        print(f"clean-run: nothing of run {run!r} under {artifacts}")


if __name__ == "__main__":
    main()
