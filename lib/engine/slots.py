"""The static decode step's fixed batch: slots over a preallocated KV cache read through a window.

Every tensor a static step touches keeps its shape and address for the whole call: `slots` rows (a
free slot is masked, not removed), each layer's keys and values preallocated to `capacity` columns
(transformers' StaticLayer, written in place at one shared column), the [slots, capacity] mask, the
positions and the last tokens updated in place. That is what lets a step be captured and replayed
as a CUDA graph (lib/engine/graphs.py). A step attends over a window of the first columns, not the
whole buffer: the smallest of a series of widths (at most 1.25x apart, `window_for`) that holds
the column it writes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from transformers.cache_utils import Cache, StaticLayer

from lib.engine.kv_rows import Rows, cache_layers
from lib.engine.outputs import EngineStats


@dataclass
class Slots:
    """One call's fixed batch of a static decode: slot s holds prompt items[s], or nothing (None)."""

    cache: Cache  # StaticLayers read through a window, [slots, heads, capacity, dim] per layer
    mask: torch.Tensor  # [slots, capacity] 1 = a real token of the slot's row
    positions: torch.Tensor  # [slots] position id of each slot's next token
    last: torch.Tensor  # [slots] last token of each slot
    col: int  # the column the next token is written to, the same for every slot
    suffix_lengths: list[int]  # each prompt's own tokens after the shared prefix (where a placed row starts)
    stats: EngineStats  # the call's, counted as it runs
    items: list[int | None] = field(default_factory=list)
    generated: list[list[int]] = field(default_factory=list)
    # The first column of each slot's real tokens (None: free), kept on the host so a shift needs
    # no read of the mask from the device.
    starts: list[int | None] = field(default_factory=list)
    # Whether a slot's first token (its prefill's) is still only on the device, in `last`: it is
    # read with the next block's tokens, so a refill makes the host wait for nothing.
    unread: list[bool] = field(default_factory=list)
    # The step for each window width (lib/engine/graphs.py: its capture, or the eager body).
    steps: dict[int, Callable[[], torch.Tensor]] = field(default_factory=dict)
    idle: torch.Generator | None = None  # draws the ignored tokens of free slots when sampling

    def __post_init__(self):
        self.move_to(self.col)

    @property
    def capacity(self) -> int:
        return self.mask.shape[1]

    def move_to(self, col: int) -> None:
        """Write the next token at `col`: the host's column and each layer's device counter
        (StaticLayer.cumulative_length, which a captured step reads and advances), set in place together."""
        self.col = col
        for layer in self.cache.layers:
            layer.cumulative_length.fill_(col)

    def first_used(self) -> int:
        """The first column a live row uses (`col` when none is live)."""
        return min((start for start in self.starts if start is not None), default=self.col)

    def use_window(self, window: int) -> None:
        """Make the next step (eager, or a capture) attend over the first `window` columns."""
        for layer in self.cache.layers:
            layer.window = window


# Window widths: m * 2**e for m in WINDOW_MANTISSAS, so consecutive widths differ by at most 1.25x
# (8, 10, 12, 14, 16, 20, ..., 128, 160, 192, 224, 256, ...: multiples of 16 from 128 on).
WINDOW_MANTISSAS = (4, 5, 6, 7)
READ_BOUND = 1.25  # a step reads at most this many times the columns in use (above the smallest window)


def window_for(columns: int, capacity: int) -> int:
    """The smallest window width that holds `columns`, at most `capacity`."""
    exponent = 1
    while True:
        for mantissa in WINDOW_MANTISSAS:
            if mantissa << exponent >= columns:
                return min(mantissa << exponent, capacity)
        exponent += 1


class WindowLayer(StaticLayer):
    """transformers' StaticLayer whose update returns only the first `window` columns of its buffers
    (a view: the step reads those, and the mask spans as many)."""

    window: int = 0

    def update(self, key_states, value_states, *args, **kwargs):
        keys, values = super().update(key_states, value_states, *args, **kwargs)
        return keys[:, :, :self.window], values[:, :, :self.window]

    def get_mask_sizes(self, *args, **kwargs) -> tuple[int, int]:
        return self.window, 0


def static_cache(like: Rows, slots: int, capacity: int) -> Cache:
    """A cache of WindowLayers shaped like the prefilled rows' layers, for `slots` rows."""
    layers = []
    for source in cache_layers(like.cache):
        layer = WindowLayer(max_cache_len=capacity)
        layer.window = capacity
        keys, values = source.keys[:1], source.values[:1]
        # Made on the device: StaticLayer copies its host counter there, a wait for the queued work.
        layer.cumulative_length = torch.zeros((), dtype=torch.long, device=keys.device)
        shape = (slots, keys.shape[1], 1, keys.shape[-1])
        layer.lazy_initialization(keys.new_zeros(shape), values.new_zeros(shape[:3] + values.shape[-1:]))
        layers.append(layer)
    return Cache(layers=layers)


def empty_slots(like: Rows, slot_count: int, capacity: int, suffix_lengths: list[int], stats: EngineStats) -> Slots:
    """`slot_count` free slots of `capacity` columns, shaped like the prefilled rows."""
    device = like.mask.device
    return Slots(cache=static_cache(like, slot_count, capacity),
                 mask=torch.zeros((slot_count, capacity), dtype=like.mask.dtype, device=device),
                 positions=torch.zeros(slot_count, dtype=like.positions.dtype, device=device),
                 last=torch.zeros(slot_count, dtype=like.last.dtype, device=device), col=like.mask.shape[1],
                 suffix_lengths=suffix_lengths, stats=stats, items=[None] * slot_count,
                 generated=[[] for _ in range(slot_count)], starts=[None] * slot_count, unread=[False] * slot_count)


def step_body(model, rows: Slots, window: int) -> torch.Tensor:
    """One decode step that reads and writes only the slots' fixed tensors: what a graph captures.

    The column it writes is the cache's own device counter (StaticLayer.cumulative_length, which
    each layer's update advances), not the host's `rows.col`: a replay writes where the call has got
    to, not where the capture happened. It attends over the first `window` columns (the cache's
    layers are set to the same window by `Slots.use_window`). Returns the next-token logits [slots, vocab]."""
    column = rows.cache.layers[0].cumulative_length.view(1)
    rows.mask.index_fill_(1, column, 1)
    out = model(input_ids=rows.last[:, None], attention_mask=rows.mask[:, :window],
                position_ids=rows.positions[:, None], past_key_values=rows.cache, use_cache=True)
    rows.positions += 1
    return out.logits[:, -1]
