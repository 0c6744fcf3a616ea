"""Is this output already made from these inputs? The one answer every stage uses.

Each stage hashes what its output depends on into a fingerprint (its keys, input files, weights)
and writes the fingerprint into a JSON record beside or inside the output (the metrics of an
evaluation, the adapter's training_complete.json, refine's record). A rerun with the same
fingerprint finds the record and does nothing (touching the output, so Make sees it current); a
different one redoes the work and moves the old output aside. Folders of unfinished, resumable
work carry their fingerprint in an inputs.sha256 marker instead.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path


def record_for(record: Path, fingerprint: str) -> dict | None:
    """The JSON record when it was written for `fingerprint`; None when absent or of other inputs."""
    if not record.is_file():
        return None
    values = json.loads(record.read_text(encoding="utf-8"))
    return values if values.get("fingerprint") == fingerprint else None


def current_record(output: Path, record: Path, fingerprint: str) -> dict | None:
    """The record when `output` exists and its record names `fingerprint` (the work is done); None when
    it must be done. A query: it changes nothing (`mark_current` tells Make)."""
    return record_for(record, fingerprint) if output.exists() else None


def mark_current(output: Path) -> None:
    """Touch an output that is already made from these inputs, so Make, which reran its stage for a
    newer prerequisite (a rewritten params file, code), sees it current and reruns nothing after it."""
    output.touch()


INPUTS_MARKER = "inputs.sha256"  # in a folder of resumable work: the fingerprint of what it was made from


def made_from(folder: Path, fingerprint: str) -> bool:
    """Whether a folder of resumable work was made from these inputs (its inputs.sha256 matches)."""
    marker = folder / INPUTS_MARKER
    return marker.is_file() and marker.read_text().strip() == fingerprint


def mark_made_from(folder: Path, fingerprint: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / INPUTS_MARKER).write_text(fingerprint + "\n")


def reset_dir_unless_fingerprint(folder: Path, fingerprint: str) -> None:
    """Keep a folder of unfinished evaluation work only if it was made from the same inputs;
    otherwise empty it (it holds no finished result)."""
    if made_from(folder, fingerprint):
        return
    shutil.rmtree(folder, ignore_errors=True)
    mark_made_from(folder, fingerprint)
