"""Delete one run's folder and its evaluation files: the only command that deletes work.

    make clean-run RUN=demo
    python -m stages.clean_run --run demo

Removes artifacts/run_<run>/ and the files at the artifact root that belong to that run by exact
name (gsm8k_preds_<run>.jsonl, its _base and _checkpoint-<step> evaluations, ...); run `demo_2` or
`demo_base` is never touched. Prints each path it removes.
"""

import shutil
from pathlib import Path

import click

from lib.console import stage_help
from lib.errors import InputError
from lib.pipeline.artifacts import RunPaths


@click.command(help=stage_help(__doc__))
@click.option("--run", "run", required=True, help="The run whose artifacts are removed.")
@click.option("--artifacts", envvar="ARTIFACTS_DIR", default="artifacts", show_default=True, help="Artifact root.")
def main(run, artifacts):
    try:
        paths = RunPaths(Path(artifacts), run).files()
    except InputError as err:
        raise click.ClickException(str(err)) from None
    for path in paths:
        shutil.rmtree(path) if path.is_dir() else path.unlink()
        print(f"removed {path}")
    if not paths:
        print(f"clean-run: nothing of run {run!r} under {artifacts}")


if __name__ == "__main__":
    main()
