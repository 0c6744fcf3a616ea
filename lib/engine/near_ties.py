"""When two greedy decodings of one model may part without either being wrong: one rule for "the
static step agrees with the dynamic one", used by `hardware.decode: auto`'s probe
(lib/engine/static.py) and by the GPU tests that compare the engine with `generate`.

Two computations of the same logits in a low-precision dtype (other kernels, other batch shapes,
other summation orders) round differently: each logit is rounded to the dtype at the end (half a
unit in the last place, ulp, each), after hidden states that were themselves rounded in every layer.
Where the two likeliest tokens are that close, greedy decoding picks by the kernels' rounding, not
by the model. The rule: a first divergence is forgiven when the two tokens are the two likeliest
and their logits are at most NEAR_TIE_ULPS apart, counted in the dtype's ulp at the larger
logit's magnitude (bf16 keeps 8 significant bits: at a logit of 20, one ulp is 0.125).
"""

from __future__ import annotations

import math

import torch

# Four ulps: the two final roundings (one ulp together) and as much again twice over for what the
# layers before them rounded differently. A real error of the step (a wrong column, a stale cache)
# moves the top logits by whole units, hundreds of bf16 ulps at the usual magnitudes.
NEAR_TIE_ULPS = 4


def ulp(value: float, dtype: torch.dtype) -> float:
    """The spacing of `dtype`'s numbers at |value| (one unit in the last place)."""
    info = torch.finfo(dtype)
    return 2.0 ** math.floor(math.log2(max(abs(value), info.tiny))) * info.eps


def gap_in_ulps(top: float, second: float, dtype: torch.dtype) -> float:
    """How far apart two logits are, in `dtype`'s ulps at the larger one's magnitude."""
    return abs(top - second) / ulp(max(abs(top), abs(second)), dtype)


def near_tie(logits: torch.Tensor, a: int, b: int, dtype: torch.dtype | None = None) -> tuple[bool, float]:
    """(whether picking token a or b is a rounding tie, their gap in ulps of `dtype`, default the
    logits' own): a and b must be the two likeliest tokens and at most NEAR_TIE_ULPS apart; the gap
    is infinite when they are not the two likeliest."""
    top = logits.float().topk(2)
    if set(top.indices.tolist()) != {a, b}:
        return False, math.inf
    gap = gap_in_ulps(float(top.values[0]), float(top.values[1]), dtype or logits.dtype)
    return gap <= NEAR_TIE_ULPS, gap
