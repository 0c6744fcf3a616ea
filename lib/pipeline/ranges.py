"""Checking a resolved config: each numeric key within the range its declaration gives
(lib/pipeline/config.py), then the rules that relate two keys."""

from __future__ import annotations

from collections.abc import Callable

from lib.errors import InputError
from lib.pipeline.config import RANGES, Config


def check_values(config: Config, source_of: Callable[[str], str]) -> None:
    """Each numeric key within its range, then the rules that relate two keys; an error names the
    file or override that set the key (`source_of(section.key)`)."""
    values = config.to_dict()
    for key, valid in RANGES.items():
        section, name = key.split(".")
        value = values[section][name]
        for item in value.values() if isinstance(value, dict) else [value]:
            if item is not None and not valid.holds(item):
                raise InputError(f"{source_of(key)}: key '{key}' must be {valid.describe()}, got {item!r}")
    if config.fewshot.k > config.fewshot.pool_size:
        raise InputError(f"{source_of('fewshot.k')}: key 'fewshot.k' must be between 0 and fewshot.pool_size"
                         f" ({config.fewshot.pool_size}), got {config.fewshot.k}")
    if config.eval.adapter == "none" and config.sweep.enabled:
        raise InputError(f"{source_of('sweep.enabled')}: sweep.enabled needs checkpoints; a run with"
                         " eval.adapter: none trains none (set sweep.enabled=false)")
    if config.sweep.last_n > config.train.save_total_limit:
        raise InputError(f"{source_of('sweep.last_n')}: key 'sweep.last_n' ({config.sweep.last_n}) must be <="
                         f" train.save_total_limit ({config.train.save_total_limit}): only that many checkpoints"
                         " are kept")
