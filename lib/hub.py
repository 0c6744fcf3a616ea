"""What a preset needs from the Hugging Face hub: fetched once where there is internet, then
read from the HF cache on nodes without it; a fetch that fails says in one line what and why.

    python -m lib.hub download --preset presets/simple.yaml    # make download PRESET=simple

GPU clusters rarely give compute nodes a network. `download` fetches the base model (at its
revision), a hub `refine.model`, GSM8K and a hub safeguard model into the HF cache (HF_HOME) on a
login node, and checks the files a user provides; the compute node then runs with
HF_HUB_OFFLINE=1. Every hub load in lib/ goes through `hub_errors`, so a model that is not cached
offline, a typo or a gated repository without a token stops with one line naming it, not a traceback.
"""

from __future__ import annotations

import os
import re
from contextlib import contextmanager
from pathlib import Path

import click

from lib.errors import InputError

# Files from_pretrained reads for a causal LM or a classifier with safetensors weights (no pickles,
# no original/ checkpoints or GGUF copies some repositories also hold).
MODEL_FILES = ["*.json", "*.safetensors", "*.txt", "*.model", "*.jinja", "*.tiktoken", "tokenizer*"]


def is_hub_id(name: str | None) -> bool:
    """owner/name that is no local path (`data/safeguard_model` is one even before it exists)."""
    return bool(name and re.fullmatch(r"[\w-][\w.-]*/[\w.-]+", name)) and not Path(name).exists() \
        and not Path(name.split("/")[0]).is_dir()


def why_not(error: Exception) -> str:
    """The reason a hub fetch failed and its fix, from huggingface_hub's error types."""
    from huggingface_hub.errors import (GatedRepoError, LocalEntryNotFoundError, OfflineModeIsEnabled,
                                        RepositoryNotFoundError, RevisionNotFoundError)

    offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false")
    chain, cause = [], error
    while cause is not None and len(chain) < 8:  # transformers wraps the hub's error in an OSError
        chain.append(cause)
        cause = cause.__cause__ or cause.__context__
    kinds = tuple(type(e) for e in chain)
    if any(issubclass(k, GatedRepoError) for k in kinds):
        return "a gated repository: accept its licence on the hub, then set HF_TOKEN in the environment"
    if any(issubclass(k, RevisionNotFoundError) for k in kinds):
        return "that revision does not exist on the hub: check model.revision"
    if any(issubclass(k, RepositoryNotFoundError) for k in kinds):
        return "no such repository on the hub (a typo, or a private one: set HF_TOKEN)"
    if offline or any(issubclass(k, (LocalEntryNotFoundError, OfflineModeIsEnabled, ConnectionError)) for k in kinds):
        return ("not in the HF cache and the hub cannot be reached (offline): run `make download PRESET=<preset>`"
                " where there is internet (same HF_HOME), or point the setting at a local folder")
    return f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"


@contextmanager
def hub_errors(name: str, what: str, revision: str | None = None):
    """Turn a failed hub fetch of `name` inside the block into one InputError line. Local folders
    are left alone: their loaders report their own errors."""
    if not is_hub_id(name):
        yield
        return
    try:
        yield
    except (OSError, ValueError) as error:
        at = f"@{revision}" if revision else ""
        raise InputError(f"{what} {name}{at}: {why_not(error)}") from None


def download_model(name: str, revision: str | None, what: str) -> str:
    """A hub model's files into the HF cache; its local snapshot folder."""
    from huggingface_hub import snapshot_download

    with hub_errors(name, what, revision):
        return snapshot_download(name, revision=revision, allow_patterns=MODEL_FILES)


def needs(config) -> list[tuple[str, str, str | None]]:
    """(kind, name, revision) of everything `config` takes from the hub."""
    from lib.data import is_local_source

    items = []
    if is_hub_id(config.model.base):
        items.append(("model.base", config.model.base, config.model.revision))
    if is_hub_id(config.refine.model):
        items.append(("refine.model", config.refine.model, None))
    if is_hub_id(config.safety.safeguard_model):
        items.append(("safety.safeguard_model", config.safety.safeguard_model, None))
    for key in ("gsm8k_train", "gsm8k_test"):
        if not is_local_source(getattr(config.data, key)):
            items.append((f"data.{key}", getattr(config.data, key), None))
    return items


def check_provided(config) -> list[str]:
    """The files a user provides, read as the stages will read them: one line each."""
    from lib.data import load_ailuminate

    lines = [f"data.ailuminate {config.data.ailuminate}: {len(load_ailuminate(config.data.ailuminate))} prompts"]
    prompt = Path(config.safety.safety_prompt)
    guidelines = prompt.read_text(encoding="utf-8") if prompt.is_file() else ""
    if not guidelines.strip():
        raise InputError(f"safety.safety_prompt {prompt}: missing or empty (the Safety Guidelines prompt you provide)")
    lines.append(f"safety.safety_prompt {prompt}: {len(guidelines)} characters")
    guard = Path(config.safety.safeguard_model)
    if config.safety.safeguard_model.startswith("embedded:"):
        lines.append(f"safety.safeguard_model {guard}: embedded (converted on first use)")
    elif not is_hub_id(config.safety.safeguard_model):
        if not (guard / "config.json").is_file() or not list(guard.glob("*.safetensors")):
            raise InputError(f"safety.safeguard_model {guard}: not a model folder with config.json and *.safetensors")
        lines.append(f"safety.safeguard_model {guard}: a local model folder")
    return lines


@click.group()
def main():
    """The hub side of a preset."""


@main.command()
@click.option("--preset", required=True, type=click.Path(exists=True, dir_okay=False), help="Preset YAML.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Config override (repeatable).")
def download(preset, overrides):
    """Fetch what PRESET needs from the hub into the HF cache and check the provided files."""
    from lib.config import load_config
    from lib.data import load_gsm8k

    try:
        config = load_config(preset, list(overrides))
        for kind, name, revision in needs(config):
            if kind.startswith("data."):
                split = "train" if kind.endswith("train") else "test"
                count = len(load_gsm8k(name, split, config.data.gsm8k_hub_config))
                print(f"download: {kind} {name} ({split}): {count} problems in the HF datasets cache")
            else:
                folder = download_model(name, revision, kind)
                print(f"download: {kind} {name}{'@' + revision if revision else ''}: {folder}")
        for line in check_provided(config):
            print(f"download: {line}")
    except InputError as error:
        raise click.ClickException(str(error)) from None
    print(f"download: everything {preset} needs is local; where there is no internet run with HF_HUB_OFFLINE=1"
          " HF_DATASETS_OFFLINE=1 (same HF_HOME)")


if __name__ == "__main__":
    main()
