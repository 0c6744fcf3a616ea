"""Upload a run's adapter with its model card to a Hub model repository.

    make push RUN=simple REPO=you/qwen3-4b-gsm8k-qlora [PUBLIC=1]
    python -m stages.push --run simple --repo you/qwen3-4b-gsm8k-qlora [--public]

Refuses a run that has not been summarized (no card yet) and a run that trained nothing. The
repository is created private unless asked otherwise; the upload is one commit of the adapter's
weights, its config and README.md (the card), never the training record or pickles. The token is
huggingface_hub's own (HF_TOKEN or `hf auth login`); it is never written anywhere. Without a
network it stops in one line.
"""

from pathlib import Path

import click

from lib.console import stage_help
from lib.errors import InputError
from lib.results.push import prepare_upload, upload


@click.command(help=stage_help(__doc__))
@click.option("--run", "run", required=True, help="The run whose adapter is uploaded.")
@click.option("--repo", "repo_id", required=True, help="Hub model repository, e.g. you/qwen3-4b-gsm8k-qlora.")
@click.option("--public", is_flag=True, help="Create the repository public (default: private).")
@click.option("--artifacts", envvar="ARTIFACTS_DIR", default="artifacts", show_default=True, help="Artifact root.")
def main(run, repo_id, public, artifacts):
    try:
        plan = prepare_upload(Path(artifacts), run, repo_id, public)
        url = upload(plan)
    except InputError as error:
        raise click.ClickException(str(error)) from None
    print(f"push: {', '.join(plan.files)} -> {url} ({'private' if plan.private else 'public'})")


if __name__ == "__main__":
    main()
