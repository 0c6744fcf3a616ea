"""The engine's static-shape decode step (`hardware.decode: static`): fixed slots over a preallocated cache.

The dynamic step (lib/engine/dynamic.py) grows its rows' cache and mask every step and removes
finished rows, so every step has new shapes. Here the call's batch is `Slots` (lib/engine/slots.py):
every tensor a step touches keeps its shape and address for the whole call, which lets a step be
captured and replayed as a CUDA graph (lib/engine/graphs.py); on the CPU it runs eagerly and gives
the dynamic step's tokens. The step writes at the cache's own device counter, so one capture serves
every step of a call that reads the same columns, refills and shifts included; sampling draws
outside it (per-prompt generators).

Layout: as in the dynamic step, every row writes its next token at the same column `col`, with
its own tokens right-aligned before it; a refill's prefilled suffix goes to [col - width, col)
(`col` moves right first when it is smaller: the rows already there get a masked gap). A step
attends over the smallest window (lib/engine/slots.window_for) that holds `col`, and when that
window is more than 1.25x the columns in use (from the oldest live row's first column to `col`),
or `col` reaches `capacity` (1.25 x the longest a row can span), the live columns move to the left
edge. So a step reads at most 1.25x the columns some row uses, and the graphs are one per window,
a dozen or so per call. The shared prefix stays stored once. Prefill and refill stay outside the step.

A prefill's first tokens stay on the device (in the slots' `last`) and are read with the next
block's: one read per block, refills included. A newcomer whose first token ends it therefore keeps
its slot for one block (its block's tokens are discarded, counted as wasted).
"""

from __future__ import annotations

from functools import partial

import torch

from lib.devices import to_device
from lib.engine.graphs import Capture, CudaGraphs, capture_for, warm_up
from lib.engine.kv_rows import Rows, cache_layers
from lib.engine.outputs import EngineStats, read_back
from lib.engine.slots import READ_BOUND, Slots, empty_slots, step_body, window_for
from lib.errors import InputError, error_line

REFILL_SHARE = 8  # the static step refills when 1/REFILL_SHARE of its slots are free


class StaticStep:
    """The engine's decode step over fixed slots: replayed as a CUDA graph where `capture` records it
    (`StaticStep.on(device)`: CUDA graphs on CUDA), eager without one (None)."""

    reads_first_tokens = False  # read with the next block's tokens (one host read per block)

    def __init__(self, capture: Capture | None = None, capacity_for: int | None = None, fallback: bool = False):
        """`capacity_for`: the new tokens the cache is sized for (default the engine's max_new_tokens;
        auto's probe decodes a few tokens in the call's cache). `fallback` (hardware.decode auto): a
        step that cannot be captured runs eagerly, said in one line, instead of stopping."""
        self.capture = capture
        self.capacity_for = capacity_for
        self.fallback = fallback

    @classmethod
    def on(cls, device: torch.device, **options) -> StaticStep:
        """The step as `hardware.decode: static` runs it on `device`: graphs on CUDA, eager elsewhere."""
        return cls(capture_for(device), **options)

    @property
    def mode(self) -> str:
        return "static-cuda-graph" if isinstance(self.capture, CudaGraphs) else "static"

    def start(self, engine, first: Rows, suffix_lengths: list[int], stats: EngineStats) -> Slots:
        """The call's slots, as many as the first prompts, holding them."""
        slot_count = len(first.items)
        # The longest a row can span (its suffix, the new tokens, a block's overrun after its stop) and a
        # quarter more: a shift at the last column then frees at least the quarter.
        longest = max(suffix_lengths) + (self.capacity_for or engine.max_new_tokens) + engine.steps_per_sync
        slots = empty_slots(first, slot_count, longest + max(longest // 4, 1), suffix_lengths, stats)
        self._place(slots, first, list(range(slot_count)))
        return slots

    def place(self, engine, slots: Slots, fresh: Rows, free: list[int], stats: EngineStats) -> Slots:
        stats.refills += 1
        self._place(slots, fresh, free)
        return slots

    def release(self, slots: Slots, free: list[int]) -> None:
        """A finished row's slot is free: masked until a newcomer takes it."""
        for slot in free:
            slots.items[slot], slots.generated[slot], slots.starts[slot] = None, [], None
            slots.mask[slot] = 0

    def refillable(self, slots: Slots, free: list[int], pending: int) -> list[int]:
        """The free slots to refill now: all of them once an eighth of the slots are free (or none
        decodes), else none yet. A refill is a prefill of its own (thousands of kernels and a read of
        the first tokens), while a free static slot costs only its share of a step that runs anyway:
        at 64 slots and 2-3 answers ending per 8-step block, refilling at every block would add a
        prefill to nearly every block."""
        free = [slot for slot, item in enumerate(slots.items) if item is None]
        refill_at = max(1, len(slots.items) // REFILL_SHARE)
        if len(free) < min(refill_at, pending) and len(free) < len(slots.items):
            return []
        return free

    def settle(self, slots: Slots, free: list[int]) -> Slots | None:
        """The slots to decode next (free ones stay, masked); None when none holds a row."""
        return None if all(item is None for item in slots.items) else slots

    def _place(self, slots: Slots, fresh: Rows, targets: list[int]) -> None:
        """Copy freshly prefilled rows into free slots, right-aligned before `col` (moved right
        first if the suffixes are wider: the live rows get masked columns, which change nothing)."""
        width = fresh.mask.shape[1]
        if slots.col < width:
            slots.move_to(width)
        start = slots.col - width
        index = to_device(torch.tensor(targets), slots.mask.device)
        for static, source in zip(slots.cache.layers, cache_layers(fresh.cache)):
            static.keys[index, :, start:slots.col] = source.keys[:, :, -width:]
            static.values[index, :, start:slots.col] = source.values[:, :, -width:]
        slots.mask[index] = 0
        slots.mask[index, start:slots.col] = fresh.mask
        slots.positions[index] = fresh.positions
        slots.last[index] = fresh.last
        for row, slot in enumerate(targets):
            slots.items[slot], slots.generated[slot] = fresh.items[row], fresh.generated[row]
            slots.starts[slot] = slots.col - slots.suffix_lengths[fresh.items[row]]  # after its padding
            slots.unread[slot] = True

    def decode_block(self, engine, slots: Slots, stats: EngineStats) -> None:
        """Up to steps_per_sync static steps, then one copy of their tokens, with the first tokens
        of the slots filled since the last block; a free slot's tokens are computed and ignored,
        as are a row's after its stop (counted as wasted)."""
        counted = [len(tokens) + unread for tokens, unread in zip(slots.generated, slots.unread)]
        steps = min(engine.steps_per_sync, engine.max_new_tokens - max(counted))
        unread = any(slots.unread)
        # A block of newcomers that all end at their first token (max_new_tokens 1) needs no step.
        steps = steps if unread else max(steps, 1)
        block = [slots.last.clone()] if unread else []
        for _ in range(steps):
            self._decode_step(engine, slots)
            block.append(slots.last.clone())
        for slot, (item, tokens, new) in enumerate(zip(slots.items, slots.generated,
                                                       read_back(torch.stack(block, dim=1), stats))):
            first = unread and slots.unread[slot]
            new = new if first or not unread else new[1:]  # column 0: the first tokens, read for new slots only
            taken = 0 if item is None else engine.extend_row(item, tokens, new)
            stats.decode_wasted += steps - max(taken - first, 0)
            slots.unread[slot] = False
        stats.decode_positions += steps * len(slots.items)

    def _decode_step(self, engine, slots: Slots) -> None:
        """One token for every slot: the fixed-tensor body over its window (eager, or replayed as
        that window's captured graph), then the next tokens from its logits (sampling draws with
        per-prompt generators, outside it)."""
        self._compact(slots)
        window = window_for(slots.col + 1, slots.capacity)
        slots.use_window(window)
        step = slots.steps.get(window)
        logits = self._new_step(engine, slots, window) if step is None else step()
        slots.stats.kv_columns_read += window
        slots.stats.kv_columns_in_use += slots.col + 1 - slots.first_used()
        slots.col += 1
        slots.last.copy_(self._next_tokens(engine, logits, slots))

    def _new_step(self, engine, slots: Slots, window: int) -> torch.Tensor:
        """The first step over this window, eager (a capture's warm-up: kernels chosen, workspaces
        made at this shape); the body is then captured for the window's later steps."""
        body = partial(step_body, engine.model, slots, window)
        logits = warm_up(body, engine.device)
        try:
            slots.steps[window] = self.capture(body) if self.capture else body
        except RuntimeError as error:
            if not self.fallback:
                raise InputError(f"hardware.decode=static: the decode step could not be captured"
                                 f" ({error_line(error)}); set hardware.decode=dynamic") from error
            print(f"hardware.decode auto: the decode step could not be captured ({error_line(error)});"
                  " running the static step eagerly (the same tokens, without the graph's speed)")
            self.capture = None
            slots.steps = {width: partial(step_body, engine.model, slots, width) for width in [*slots.steps, window]}
        return logits

    def _next_tokens(self, engine, logits: torch.Tensor, slots: Slots) -> torch.Tensor:
        """Greedy for every slot, or a draw for every slot: a slot's prompt's own generator, a free
        slot the call's idle one (its token is ignored). Drawing all slots, rather than indexing the
        active ones with a host list, copies nothing from the host and reads nothing back; a
        prompt's generator still advances once per step of its own, whatever shares the batch."""
        if engine.sampling is None:
            return logits.argmax(-1)
        if slots.idle is None:
            slots.idle = torch.Generator(device=engine.device).manual_seed(0)
        return engine.sampling.draw(logits, [engine.generators[item] if item is not None else slots.idle
                                             for item in slots.items])

    def _compact(self, slots: Slots) -> None:
        """Move the live columns to the left edge when the next step has no column left, or would
        read more than READ_BOUND x the columns in use through its window."""
        first_used = slots.first_used()
        in_use = slots.col + 1 - first_used
        window = window_for(slots.col + 1, slots.capacity)
        if slots.col < slots.capacity and (window <= READ_BOUND * in_use or window == window_for(1, slots.capacity)):
            return
        self._shift(slots, first_used)

    def _shift(self, slots: Slots, shift: int) -> None:
        """Move every slot left by `shift` columns (those before the first a live row uses)."""
        # The host knows where each row's tokens start (a row spans at most `longest` columns back
        # from col, see start; the padding before its tokens may go).
        if shift <= 0:
            raise InputError("generation: a static decode ran out of cache columns (a row longer than its bound)")
        kept = slots.col - shift  # only the columns before col hold anything; the rest is masked
        for layer in slots.cache.layers:
            layer.keys[:, :, :kept] = layer.keys[:, :, shift:slots.col].clone()
            layer.values[:, :, :kept] = layer.values[:, :, shift:slots.col].clone()
        slots.mask[:, :kept] = slots.mask[:, shift:slots.col].clone()
        slots.mask[:, kept:].zero_()  # in place, not a host scalar turned into a tensor
        slots.starts = [None if start is None else start - shift for start in slots.starts]
        slots.stats.shifts += 1
        slots.move_to(kept)
