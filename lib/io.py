"""Reading and writing the files that stages exchange.

Writes are atomic (temp file in the same folder + rename), so a killed stage never leaves a
file that looks complete to Make or to a later stage.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

import jsonlines

from lib.errors import InputError


def atomic_write_text(path: str | Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def folder_problem(path: str | Path, what: str) -> str | None:
    """Why `path` cannot be a folder this process writes into (a file on the way, a place nothing can
    be created), or None. It creates nothing: the nearest existing folder is probed with a temporary
    folder, made and removed (permission bits alone say yes to root, and /proc says no to everyone)."""
    path = Path(path)
    existing = path
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir():
        return f"{what} {path}: {existing} is a file, not a folder"
    try:
        Path(tempfile.mkdtemp(dir=existing, prefix=".write-probe.")).rmdir()
    except OSError as err:
        return f"{what} {path}: nothing can be written in {existing} ({err.strerror})"
    return None


def read_json_file(path: str | Path, what: str = "JSON"):
    """A JSON file a user provides (a model folder's config, a tokenizer's), or an InputError naming the
    file, the line and what is wrong: a truncated copy is one line, not a traceback."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise InputError(f"{path}:{err.lineno}: not valid {what} ({err.msg}, column {err.colno});"
                         " the file may be truncated (copy it again)") from None
    except UnicodeDecodeError:
        raise InputError(f"{path}: not UTF-8 text (expected {what})") from None


def readable_as_umask_allows(folder: str | Path) -> None:
    """Give the safetensors files under `folder` the permissions the umask allows (0644 under the
    usual 022), as every other file gets: the safetensors library writes its files 0600 whatever
    the umask, so a teammate on a shared cluster could not read an adapter, a checkpoint or an export."""
    mode = 0o666 & ~_umask()
    for path in Path(folder).rglob("*.safetensors"):
        path.chmod(mode)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_if_changed(path: str | Path, text: str) -> bool:
    """Write only when the content differs, so the file's mtime tells Make what changed."""
    path = Path(path)
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return False
    atomic_write_text(path, text)
    return True


def dumps_json(obj) -> str:
    return json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=False) + "\n"


def dumps_jsonl(rows: Iterable[dict]) -> str:
    # One compact object per line, keys in insertion order: same rows, same bytes.
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def atomic_write_json(path: str | Path, obj) -> None:
    atomic_write_text(path, dumps_json(obj))


def atomic_write_jsonl(path: str | Path, rows: Iterable[dict]) -> None:
    atomic_write_text(path, dumps_jsonl(rows))


def read_jsonl(path: str | Path, required: tuple[str, ...] = (), what: str = "",
               flags: tuple[str, ...] = ()) -> list[dict]:
    """Every object of a JSONL file, each tagged with `_line` (1-based) for later messages.

    `required` fields are non-empty strings, `flags` true/false. Blank lines are skipped. Fails
    with one line naming the file, the line number and the fields that belong there.
    """
    path = Path(path)
    fields = f" with fields {', '.join(required + flags)}" if required or flags else ""
    expected = f"JSONL{' of ' + what if what else ''}{fields}"
    if not path.is_file():
        raise InputError(f"{path}: file not found (expected {expected})")
    rows = []
    with open(path, "rb") as handle:
        lines = _NumberedLines(handle)
        try:
            for row in jsonlines.Reader(lines).iter(skip_empty=True):
                rows.append(_checked_row(path, lines.number, row, required, expected, flags))
        except jsonlines.InvalidLineError as err:
            problem = "not UTF-8 text" if "utf-8" in str(err) else "not a valid JSON line"
            raise InputError(f"{path}:{lines.number}: {problem} (expected {expected})") from None
    if not rows:
        raise InputError(f"{path}: file is empty (expected {expected})")
    return rows


class _NumberedLines:
    """Feeds jsonlines one physical line at a time and remembers which one it is on."""

    def __init__(self, handle):
        self.handle = handle
        self.number = 0

    def __iter__(self):
        for line in self.handle:
            self.number += 1
            yield line


def _checked_row(path: Path, line: int, row, required: tuple[str, ...], expected: str,
                 flags: tuple[str, ...] = ()) -> dict:
    where = f"{path}:{line}"
    if not isinstance(row, dict):
        raise InputError(f"{where}: not a JSON object (expected {expected})")
    for field in required:
        value = row.get(field)
        if value is not None and not isinstance(value, str):
            raise InputError(f"{where}: field '{field}' must be a string, got {type(value).__name__} {value!r}"
                             f" (expected {expected})")
        if not value or not value.strip():
            raise InputError(f"{where}: missing or empty field '{field}' (expected {expected})")
    for field in flags:
        if not isinstance(row.get(field), bool):
            raise InputError(f"{where}: field '{field}' must be true or false, got {row.get(field)!r}"
                             f" (expected {expected})")
    return {**row, "_line": line}


def count_jsonl_records(path: str | Path) -> int:
    with open(path, "rb") as handle:
        return sum(1 for line in handle if line.strip())


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
