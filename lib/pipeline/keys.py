"""How a config key is declared (lib/pipeline/config.py): `key(default, meaning, valid values, runtime)`,
and the ranges a number may take."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field


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


def key(default, doc: str, valid: Range | None = None, *, runtime: bool = False):
    """A config key: its default, what it means in one line, the valid values of a number (a
    dict's values each), and `runtime` for a key that changes no output."""
    metadata = {"doc": doc, "range": valid, "runtime": runtime}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: copy.deepcopy(default), metadata=metadata)
    return field(default=default, metadata=metadata)
