"""docs/config.md, generated from the schema (lib/pipeline/config.py): every key with its type, default,
valid values and meaning (`make config-docs`; a test fails when the file is stale)."""

from __future__ import annotations

import types
import typing
from typing import Literal

from lib.pipeline.config import schema


def key_table() -> str:
    """docs/config.md: every key with its type, default, valid values and meaning, by section."""
    lines = ["# Configuration keys", "",
             "Generated from lib/pipeline/config.py by `make config-docs` (a test fails when it is stale). A preset",
             "sets any of them per section (`extends:` another preset); `SET=\"section.key=value\"` overrides one for",
             "a run. Runtime keys change no output: changing one reruns nothing and needs no RECONFIGURE."]
    section = None
    for name, spec in schema().items():
        if name.split(".")[0] != section:
            section = name.split(".")[0]
            lines += ["", f"## {section}", "", "| key | type | default | valid | meaning |", "|---|---|---|---|---|"]
        valid = spec.valid.describe() if spec.valid else ""
        doc = spec.doc + (" (runtime)" if spec.runtime else "")
        lines.append(f"| `{name}` | {_type_name(spec.hint)} | `{_default_text(spec.default)}` | {valid} |"
                     f" {doc.replace('|', '/')} |")
    return "\n".join(lines) + "\n"


def _type_name(hint) -> str:
    origin = typing.get_origin(hint)
    if origin is Literal:
        return " / ".join(str(value) for value in typing.get_args(hint))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(arg) for arg in typing.get_args(hint))
    if origin in (list, dict):
        return f"{origin.__name__}[{', '.join(_type_name(arg) for arg in typing.get_args(hint))}]"
    return "null" if hint is type(None) else getattr(hint, "__name__", str(hint))


def _default_text(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {v:g}" for k, v in value.items()) + "}"
    return repr(value)[1:-1] if isinstance(value, str) else str(value)  # a newline shows as \n
