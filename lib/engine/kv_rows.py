"""The decoding rows' own KV cache: grown in place, refilled in place, compacted as rows leave.

Layout of a row's own cache: its tokens are right-aligned, with masked (zero) columns before them
where rows differ in length. Columns no row uses are dropped as rows leave (`compact`); a
finished row's slot takes the next prompt's freshly prefilled cache (`place`), or is removed by
moving the last row into it (`drop`), so the buffers are not copied at every change.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from lib.errors import InputError


@dataclass
class Rows:
    """The sequences decoding together, row i of every field belonging to one prompt."""

    cache: object  # transformers DynamicCache, batch = len(items)
    mask: torch.Tensor  # [rows, columns] 1 = real token
    positions: torch.Tensor  # [rows] position id of each row's next token
    last: torch.Tensor  # [rows] last generated token
    items: list[int] = field(default_factory=list)  # prompt index of each row
    generated: list[list[int]] = field(default_factory=list)


def new_cache():
    """A DynamicCache whose layers grow in place (GrowableLayer)."""
    cache = DynamicCache()
    cache.layer_class_to_replicate = GrowableLayer
    return cache


class GrowableLayer(DynamicLayer):
    """DynamicLayer appends with torch.cat, copying the whole cache at every decode step; this layer
    writes into a buffer with spare room (doubling when full) and returns views of it."""

    def update(self, key_states, value_states, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
            self.length = 0
            self.buffers = None
        needed = self.length + key_states.shape[-2]
        if self.buffers is None or needed > self.buffers[0].shape[-2]:
            capacity = max(needed + 64, 2 * (self.buffers[0].shape[-2] if self.buffers else 0))
            shape = (*key_states.shape[:2], capacity, key_states.shape[-1])
            grown = (key_states.new_zeros(shape), value_states.new_zeros(shape))
            if self.buffers is not None:
                grown[0][:, :, : self.length] = self.keys
                grown[1][:, :, : self.length] = self.values
            self.buffers = grown
        self.buffers[0][:, :, self.length:needed] = key_states
        self.buffers[1][:, :, self.length:needed] = value_states
        self.length = needed
        self.keys, self.values = self.buffers[0][:, :, :needed], self.buffers[1][:, :, :needed]
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return getattr(self, "length", 0)


def cache_layers(cache):
    for layer in cache.layers:
        if not isinstance(layer, GrowableLayer):
            raise InputError(f"generation: cache layer {type(layer).__name__} is not supported (plain attention only)")
    return cache.layers


def build_cache(keys_values: list[tuple[torch.Tensor, torch.Tensor]]):
    cache = new_cache()
    for index, (keys, values) in enumerate(keys_values):
        cache.update(keys, values, index)
    return cache


def pad_columns(tensor: torch.Tensor, at: int, count: int, dim: int) -> torch.Tensor:
    """Insert `count` zero columns at index `at` along `dim`."""
    if count == 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = count
    zeros = torch.zeros(shape, dtype=tensor.dtype, device=tensor.device)
    return torch.cat([tensor.narrow(dim, 0, at), zeros, tensor.narrow(dim, at, tensor.shape[dim] - at)], dim=dim)


def concat(parts: list[Rows]) -> Rows:
    """One batch from several, their columns right-aligned (masked columns added on the left)."""
    width = max(part.mask.shape[1] for part in parts)
    padded = [rebuild(part, list(range(len(part.items))), extra=width - part.mask.shape[1]) for part in parts]
    layers = [(torch.cat([cache_layers(p.cache)[i].keys for p in padded]),
               torch.cat([cache_layers(p.cache)[i].values for p in padded]))
              for i in range(len(cache_layers(padded[0].cache)))]
    return Rows(cache=build_cache(layers), mask=torch.cat([p.mask for p in padded]),
                 positions=torch.cat([p.positions for p in padded]), last=torch.cat([p.last for p in padded]),
                 items=[i for p in padded for i in p.items], generated=[g for p in padded for g in p.generated])


def place(rows: Rows, fresh: Rows, slots: list[int]) -> Rows:
    """Write freshly prefilled rows into finished rows' slots, in place.

    Their columns are right-aligned with the batch's; only when they need more columns than the
    batch has is the batch copied, with masked columns inserted on the left.
    """
    width = rows.mask.shape[1]
    if fresh.mask.shape[1] > width:
        rows = rebuild(rows, list(range(len(rows.items))), extra=fresh.mask.shape[1] - width)
        width = rows.mask.shape[1]
    own = fresh.mask.shape[1]
    index = torch.tensor(slots, dtype=torch.long)
    for layer, new in zip(cache_layers(rows.cache), cache_layers(fresh.cache)):
        for buffer, source in zip(layer.buffers, (new.keys, new.values)):
            buffer[index, :, :width] = 0
            buffer[index, :, width - own:width] = source.to(buffer.device)
    rows.mask[index] = 0
    rows.mask[index, width - own:] = fresh.mask
    rows.positions[index], rows.last[index] = fresh.positions, fresh.last
    for slot, item, generated in zip(slots, fresh.items, fresh.generated):
        rows.items[slot], rows.generated[slot] = item, generated
    return rows


def drop(rows: Rows, slots: list[int]) -> None:
    """Remove rows in place: the last row moves into each freed slot, then the batch is one
    shorter (a view of the same buffers, so nothing else is copied)."""
    for slot in sorted(slots, reverse=True):
        last = len(rows.items) - 1
        if slot != last:
            for layer in cache_layers(rows.cache):
                for buffer in layer.buffers:
                    buffer[slot] = buffer[last]
            for tensor in (rows.mask, rows.positions, rows.last):
                tensor[slot] = tensor[last]
            rows.items[slot], rows.generated[slot] = rows.items[last], rows.generated[last]
        for layer in cache_layers(rows.cache):
            layer.buffers = tuple(buffer[:last] for buffer in layer.buffers)
            layer.keys, layer.values = layer.buffers[0][:, :, :layer.length], layer.buffers[1][:, :, :layer.length]
        rows.mask, rows.positions, rows.last = rows.mask[:last], rows.positions[:last], rows.last[:last]
        rows.items.pop()
        rows.generated.pop()


def rebuild(rows: Rows, keep: list[int], extra: int = 0) -> Rows:
    """A copy with the kept rows only, without the columns none of them uses, and with `extra`
    masked columns on the left."""
    index = torch.tensor(keep, dtype=torch.long)
    mask = rows.mask[index]
    columns = mask.any(dim=0).nonzero().squeeze(1)
    mask = pad_columns(mask[:, columns], 0, extra, 1)
    layers = []
    if keep:
        device = cache_layers(rows.cache)[0].keys.device
        rows_at, columns_at = index.to(device), columns.to(device)
        layers = [(pad_columns(layer.keys[rows_at][:, :, columns_at], 0, extra, 2),
                   pad_columns(layer.values[rows_at][:, :, columns_at], 0, extra, 2))
                  for layer in cache_layers(rows.cache)]
    return Rows(cache=build_cache(layers), mask=mask, positions=rows.positions[index], last=rows.last[index],
                 items=[rows.items[i] for i in keep], generated=[rows.generated[i] for i in keep])


def compact(rows: Rows, slack: float = 0.25) -> Rows:
    """Drop unused columns once they are more than `slack` of the batch's columns."""
    unused = int((~rows.mask.bool().any(dim=0)).sum())
    if unused <= slack * rows.mask.shape[1]:
        return rows
    return rebuild(rows, list(range(len(rows.items))))
