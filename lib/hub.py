"""The Hugging Face hub: which names are hub ids, fetching a model's files, and one line for a failed fetch.

GPU clusters rarely give compute nodes a network: lib/tasks/download.py fetches what a preset needs
on a login node, and the compute node runs with HF_HUB_OFFLINE=1. Every hub load in lib/ goes
through `hub_errors`, so a model that is not cached offline, a typo or a gated repository without
a token stops with one line naming it, not a traceback.
"""

from __future__ import annotations

import os
import re
from contextlib import contextmanager
from pathlib import Path

from lib.errors import InputError, error_line

# A model name the toolkit ships (lib/models.py converts it on first use): neither a hub id nor a folder.
EMBEDDED_PREFIX = "embedded:"
# Files from_pretrained reads for a causal LM or a classifier with safetensors weights (no pickles,
# no original/ checkpoints or GGUF copies some repositories also hold).
MODEL_FILES = ["*.json", "*.safetensors", "*.txt", "*.model", "*.jinja", "*.tiktoken", "tokenizer*"]


# Suffixes that make a missing name a missing file, never a hub id (`data/gsm8k.json` is not a repository).
FILE_SUFFIXES = (".jsonl", ".json", ".csv", ".txt", ".yaml", ".yml", ".parquet", ".safetensors", ".gguf", ".jinja")


def is_hub_id(name: str | None) -> bool:
    """owner/name that is no local path (`data/safeguard_model` is one even before it exists)."""
    return bool(name and re.fullmatch(r"[\w-][\w.-]*/[\w.-]+", name)) and not Path(name).exists() \
        and not Path(name.split("/")[0]).is_dir() and not name.lower().endswith(FILE_SUFFIXES)


def source_kind(value: str, what: str) -> str:
    """"file", "folder" or "hub" for a setting that may name any of them, by one rule: what exists on
    disk is local (a file or a folder); what does not exist is a hub id when it reads as one (owner/name,
    no file suffix, its owner no local folder); anything else is a local path that is missing, an
    InputError naming the setting (`what`)."""
    path = Path(value)
    if path.is_file():
        return "file"
    if path.is_dir():
        return "folder"
    if is_hub_id(value):
        return "hub"
    raise InputError(f"{what} {value}: not found (neither a local file or folder nor a hub id like owner/name)")


# The fix for a model missing offline, where the command that failed is a stage (`make download`
# itself says where to run instead).
ANY_PRESET = "PRESET=<preset>"  # a caller that knows the preset puts its name here
FETCH_ELSEWHERE = (f"run `make download {ANY_PRESET}` where there is internet (same HF_HOME), or point the"
                   " setting at a local folder")
DOWNLOAD_ELSEWHERE = ("run this `make download` on a machine with internet (a login node) with the same HF_HOME,"
                      " or point the setting at a local folder")


def why_not(error: Exception, offline_fix: str = FETCH_ELSEWHERE) -> str:
    """The reason a hub fetch failed and its fix, from huggingface_hub's error types."""
    from huggingface_hub.errors import (
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    kinds = tuple(type(e) for e in _chain(error))
    if any(issubclass(k, GatedRepoError) for k in kinds):
        return "a gated repository: accept its licence on the hub, then set HF_TOKEN in the environment"
    if any(issubclass(k, RevisionNotFoundError) for k in kinds):
        return "that revision does not exist on the hub: check model.revision"
    if any(issubclass(k, RepositoryNotFoundError) for k in kinds):
        return "no such repository on the hub (a typo, or a private one: set HF_TOKEN)"
    if _unreachable(error) or any(issubclass(k, LocalEntryNotFoundError) for k in kinds):
        return f"not in the HF cache and the hub cannot be reached (offline): {offline_fix}"
    return error_line(error)


def why_not_uploaded(error: Exception) -> str:
    """The reason an upload failed and its fix, from huggingface_hub's error types."""
    from huggingface_hub.errors import HfHubHTTPError

    if _unreachable(error):
        return "the hub cannot be reached (offline, or HF_HUB_OFFLINE is set): run `make push` where there is internet"
    status = getattr(getattr(error, "response", None), "status_code", None)
    if isinstance(error, HfHubHTTPError) and status in (401, 403):
        return "not allowed: log in (`hf auth login`) or set HF_TOKEN to a token with write access to this owner"
    return error_line(error)


def _chain(error: Exception) -> list[BaseException]:
    """The error and those it wraps (transformers wraps the hub's error in an OSError)."""
    chain, cause = [], error
    while cause is not None and len(chain) < 8:
        chain.append(cause)
        cause = cause.__cause__ or cause.__context__
    return chain


def _unreachable(error: Exception) -> bool:
    """HF_HUB_OFFLINE is set, or the error (or one it wraps) is a failed connection."""
    from huggingface_hub.errors import OfflineModeIsEnabled

    offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false")
    return offline or any(isinstance(e, (OfflineModeIsEnabled, ConnectionError)) or _transport_failure(e)
                          for e in _chain(error))


def _transport_failure(error: BaseException) -> bool:
    """A failed connection of the HTTP client huggingface_hub uses: httpx or httpx2 (TransportError:
    connect, DNS, timeout, proxy) or requests (its ConnectionError is no subclass of Python's own).
    Matched by class name, as the client differs between huggingface_hub versions."""
    return any(cls.__name__ in ("TransportError", "ConnectionError", "Timeout")
               and cls.__module__.split(".")[0] in ("httpx", "httpx2", "requests")
               for cls in type(error).__mro__)


def is_hub_failure(error: Exception) -> bool:
    """An error a hub call raises for a reason outside this program (missing, refused, unreachable),
    as opposed to a bug: these become one line."""
    return isinstance(error, (OSError, ValueError)) or _transport_failure(error)


@contextmanager
def hub_errors(name: str, what: str, revision: str | None = None, offline_fix: str = FETCH_ELSEWHERE):
    """Turn a failed hub fetch of `name` inside the block into one InputError line. Local folders
    are left alone: their loaders report their own errors."""
    if not is_hub_id(name):
        yield
        return
    try:
        yield
    except Exception as error:
        if not is_hub_failure(error):
            raise
        at = f"@{revision}" if revision else ""
        raise InputError(f"{what} {name}{at}: {why_not(error, offline_fix)}") from None


def download_model(name: str, revision: str | None, what: str) -> str:
    """A hub model's files into the HF cache (`make download`); its local snapshot folder."""
    from huggingface_hub import snapshot_download

    with hub_errors(name, what, revision, offline_fix=DOWNLOAD_ELSEWHERE):
        return snapshot_download(name, revision=revision, allow_patterns=MODEL_FILES)
