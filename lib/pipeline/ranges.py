"""The valid values of every numeric config key, and the rules that relate two keys."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from lib.errors import InputError
from lib.pipeline.config import Config


@dataclass(frozen=True)
class Range:
    """The valid values of a numeric key; None = unbounded on that side."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False  # the low end itself is not allowed
    high_open: bool = False

    def holds(self, value) -> bool:
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return False
        return self.high is None or (value < self.high or (not self.high_open and value == self.high))

    def describe(self) -> str:
        if self.high is None:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
        return f"in {left}{self.low:g}, {self.high:g}{right}"


AT_LEAST_1 = Range(1)
POSITIVE = Range(0, low_open=True)
NON_NEGATIVE = Range(0)
FRACTION = Range(0, 1)  # a share or a rate: 0 to 1 inclusive
BELOW_1 = Range(0, 1, high_open=True)

# Every numeric key and its valid values, checked at load time (a test keeps this table complete).
# None is allowed where the key's type allows it.
RANGES: dict[str, Range] = {
    "data.train_limit": AT_LEAST_1,
    "data.gsm8k_limit": AT_LEAST_1,
    "data.ailuminate_limit": AT_LEAST_1,
    "fewshot.pool_size": AT_LEAST_1,
    "fewshot.seed": NON_NEGATIVE,
    "fewshot.k": NON_NEGATIVE,  # and <= fewshot.pool_size
    "tokenize.max_seq_len": Range(16),  # a chat turn's markup alone is ~10 tokens
    "lora.r": AT_LEAST_1,
    "lora.alpha": POSITIVE,
    "lora.dropout": BELOW_1,
    "train.seed": NON_NEGATIVE,
    "train.epochs": POSITIVE,
    "train.learning_rate": POSITIVE,
    "train.warmup_ratio": BELOW_1,  # a share of the steps (transformers reads >= 1 as a step count)
    "train.per_device_batch_size": AT_LEAST_1,
    "train.gradient_accumulation_steps": AT_LEAST_1,
    "train.logging_steps": AT_LEAST_1,
    "train.save_steps": AT_LEAST_1,
    "train.save_total_limit": AT_LEAST_1,  # and >= sweep.last_n
    "train.max_grad_norm": POSITIVE,
    "eval.max_new_tokens": AT_LEAST_1,
    "hardware.distributed_timeout_minutes": AT_LEAST_1,
    "eval.batch_size": AT_LEAST_1,
    "eval.chunk_size": AT_LEAST_1,
    "refine.samples_per_question": AT_LEAST_1,
    "refine.temperature": POSITIVE,
    "refine.top_p": Range(0, 1, low_open=True),
    "refine.max_per_question": AT_LEAST_1,
    "refine.seed": NON_NEGATIVE,
    "refine.max_new_tokens": AT_LEAST_1,
    "refine.batch_size": AT_LEAST_1,
    "refine.chunk_size": AT_LEAST_1,
    "refine.question_limit": AT_LEAST_1,
    "sweep.last_n": AT_LEAST_1,  # and <= train.save_total_limit
    "safety.batch_size": AT_LEAST_1,
    "safety.max_new_tokens": AT_LEAST_1,
    "safety.max_unparseable": FRACTION,
    "thresholds.accuracy": FRACTION,
    "thresholds.safety": FRACTION,
    "grades.references": FRACTION,  # each hazard's safe fraction
    "smoke.train_limit": AT_LEAST_1,
    "smoke.gsm8k_limit": AT_LEAST_1,
    "smoke.ailuminate_limit": AT_LEAST_1,
    "smoke.refine_limit": AT_LEAST_1,
}


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
