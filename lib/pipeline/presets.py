"""Loading a preset: defaults, the `extends` chain, per-key overrides, strict types.

A preset is a YAML file whose sections mirror lib/pipeline/config.py's dataclasses. A preset may
start from another with `extends: other.yaml` and change only what differs. Overrides come as
`section.key=value` strings (from `--set` on a stage, or `SET=` in Make as one string that
`split_overrides` splits); values are parsed as YAML (`true`, `3`, `null`, `[a, b]`). An unknown
key, a wrong type or a value out of range is an InputError that names the key and the file it came from.
"""

from __future__ import annotations

import dataclasses
import re
import shlex
import types
import typing
from pathlib import Path
from typing import Literal, Union

import yaml

from lib.errors import InputError
from lib.pipeline.config import Config
from lib.pipeline.ranges import check_values


def load_config(preset: str | Path, overrides: tuple[str, ...] | list[str] = (), smoke: bool = False) -> Config:
    """Defaults, then the preset chain, then overrides; smoke applies the preset's smoke sizes."""
    config = Config()
    sources: dict[str, str] = {}  # section.key -> where its value came from, for range errors
    for path, values in _preset_chain(Path(preset)):
        _apply_mapping(config, values, source=str(path), sources=sources)
    for override in overrides:
        key, value = _parse_override(override)
        _apply_mapping(config, _nest(key, value), source=f"override '{override}'", sources=sources)
    if smoke:
        config.data.train_limit = config.smoke.train_limit
        config.data.gsm8k_limit = config.smoke.gsm8k_limit
        config.data.ailuminate_limit = config.smoke.ailuminate_limit
        config.refine.question_limit = config.smoke.refine_limit
        if config.data.refined_train:  # never the real file: a smoke run's small one would take its place
            refined = Path(config.data.refined_train)
            config.data.refined_train = str(refined.with_name(f"{refined.stem}.smoke{refined.suffix}"))
    check_values(config, lambda key: sources.get(key, str(preset)))
    return config


def _preset_chain(path: Path, seen: tuple[Path, ...] = ()) -> list[tuple[Path, dict]]:
    if not path.is_file():
        raise InputError(f"{path}: preset not found (expected a YAML file such as presets/simple.yaml)")
    if path.resolve() in seen:
        raise InputError(f"{path}: 'extends' forms a cycle")
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise InputError(f"{where}: not valid YAML ({getattr(err, 'problem', err)})") from None
    if not isinstance(values, dict):
        raise InputError(f"{path}: expected a mapping of sections (model:, data:, ...)")
    parent = values.pop("extends", None)
    if parent is None:
        return [(path, values)]
    if not isinstance(parent, str):
        raise InputError(f"{path}: 'extends' must be a file name such as simple.yaml")
    return _preset_chain(path.parent / parent, seen + (path.resolve(),)) + [(path, values)]


def _apply_mapping(config: Config, values: dict, source: str, sources: dict[str, str]) -> None:
    for section_name, section_values in values.items():
        section = getattr(config, str(section_name), None)
        if not dataclasses.is_dataclass(section):
            known = ", ".join(f.name for f in dataclasses.fields(Config))
            raise InputError(f"{source}: unknown section '{section_name}' (known: {known})")
        if not isinstance(section_values, dict):
            raise InputError(f"{source}: section '{section_name}' must be a mapping of keys")
        hints = typing.get_type_hints(type(section))
        for key, value in section_values.items():
            dotted = f"{section_name}.{key}"
            if key not in hints:
                known = ", ".join(hints)
                raise InputError(f"{source}: unknown key '{dotted}' (known in {section_name}: {known})")
            setattr(section, key, _coerce(value, hints[key], dotted, source))
            sources[dotted] = source


# YAML 1.1 (PyYAML) reads a float written without a dot, `1e-4`, as a string; every user writes it so.
_EXPONENT_FLOAT = re.compile(r"[-+]?[0-9]+(\.[0-9]*)?[eE][-+]?[0-9]+")


def _coerce(value, hint, key: str, source: str):
    """The value if it fits the annotation (ints are accepted for floats, and `1e-4` strings), else an InputError."""
    if isinstance(value, str) and _EXPONENT_FLOAT.fullmatch(value) and _fits(1.0, hint) and not _fits(value, hint):
        return float(value)
    if _fits(value, hint):
        return float(value) if hint is float and isinstance(value, int) else value
    raise InputError(f"{source}: key '{key}' expects {_describe(hint)}, got {value!r}")


def _fits(value, hint) -> bool:
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        return any(_fits(value, arg) for arg in typing.get_args(hint))
    if origin is Literal:
        return value in typing.get_args(hint)
    if origin is list:
        (item,) = typing.get_args(hint)
        return isinstance(value, list) and all(_fits(v, item) for v in value)
    if origin is dict:
        key_type, value_type = typing.get_args(hint)
        return isinstance(value, dict) and all(_fits(k, key_type) and _fits(v, value_type) for k, v in value.items())
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, hint)


def _describe(hint) -> str:
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(arg) for arg in typing.get_args(hint))
    if origin is Literal:
        return "one of " + ", ".join(repr(v) for v in typing.get_args(hint))
    if origin is list:
        return f"a list of {_describe(typing.get_args(hint)[0])}"
    if origin is dict:
        key_type, value_type = typing.get_args(hint)
        return f"a mapping of {_describe(key_type)} to {_describe(value_type)}"
    return "null" if hint is type(None) else getattr(hint, "__name__", str(hint))


def _parse_override(override: str) -> tuple[str, object]:
    key, sep, raw = override.partition("=")
    if not sep or key.count(".") != 1:
        raise InputError(f"override '{override}': expected section.key=value, e.g. train.epochs=2")
    try:
        return key.strip(), yaml.safe_load(raw)
    except yaml.YAMLError:
        raise InputError(f"override '{override}': value is not valid YAML") from None


def _nest(dotted: str, value) -> dict:
    section, key = dotted.split(".")
    return {section: {key: value}}


_OVERRIDE_START = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\.[A-Za-z_][A-Za-z0-9_]*=")


def split_overrides(text: str, source: str = "SET") -> list[str]:
    """Overrides typed as one string (Make's SET) as section.key=value items: words split by shell
    quoting rules (quote a value to keep its spaces exactly: tokenize.system_prompt="You are helpful"),
    and a word that does not start with section.key= continues the value before it, joined by one
    space (SET="lora.target_modules=[q_proj, v_proj]" is one override)."""
    try:
        words = shlex.split(text)
    except ValueError as err:
        raise InputError(f"{source}={text!r}: {err} (close every quote)") from None
    overrides: list[str] = []
    for word in words:
        if _OVERRIDE_START.match(word):
            overrides.append(word)
        elif overrides:
            overrides[-1] += " " + word
        else:
            raise InputError(f"{source}={text!r}: {word!r} is not section.key=value, e.g. {source}=\"train.epochs=2\"")
    return overrides
