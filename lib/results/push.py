"""Share a run: its adapter folder with the model card, uploaded to a Hub model repository
(stages/push.py, `make push`).

Refuses a run that has not been summarized (no card yet) and a run that trained nothing. The
repository is created private unless asked otherwise; the upload is one commit of the adapter's
weights, its config and README.md (the card), and never the training record (it names paths of
this machine) or pickles. The token is huggingface_hub's own (HF_TOKEN or `hf auth login`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lib.errors import InputError
from lib.hub import is_hub_failure, is_hub_id, why_not_uploaded
from lib.pipeline.artifacts import RunPaths

UPLOADED = ("adapter_config.json", "adapter_model.safetensors", "README.md")


@dataclass(frozen=True)
class Upload:
    """What `push` sends: the repository, its visibility, the files (path in repo -> local file)."""

    repo_id: str
    private: bool
    files: dict[str, Path]

    def operations(self) -> list:
        from huggingface_hub import CommitOperationAdd

        return [CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(path)) for name, path in self.files.items()]


def prepare_upload(artifacts: Path, run: str, repo_id: str, public: bool = False) -> Upload:
    """The upload of a summarized run's adapter; an InputError when there is none to share."""
    if not is_hub_id(repo_id):
        raise InputError(f"REPO {repo_id!r}: expected a Hub repository id like you/qwen3-4b-gsm8k-qlora")
    paths = RunPaths(Path(artifacts), run)
    adapter = paths.adapter
    if not paths.training_complete.is_file():
        raise InputError(f"{adapter}: no finished adapter (run `make train RUN={run}`; a base run has none to push)")
    if not paths.is_summarized() or not (adapter / "README.md").is_file():
        raise InputError(f"run {run!r} is not summarized: run `make summarize RUN={run}` first (it writes the card)")
    return Upload(repo_id, not public, {name: adapter / name for name in UPLOADED})


def upload(plan: Upload, api=None) -> str:
    """Create the repository (if new) and commit the files; the repository's URL."""
    from huggingface_hub import HfApi

    api = api or HfApi()
    try:
        url = api.create_repo(plan.repo_id, private=plan.private, exist_ok=True, repo_type="model")
        api.create_commit(plan.repo_id, plan.operations(), commit_message="Upload the adapter and its model card")
    except Exception as error:
        if not is_hub_failure(error):
            raise
        raise InputError(f"push {plan.repo_id}: {why_not_uploaded(error)}") from None
    return str(url)
