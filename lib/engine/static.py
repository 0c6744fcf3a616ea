"""The engine's static-shape decode step: fixed batch slots over a preallocated KV cache.

The dynamic engine (lib/engine/prefix_sharing.py) grows its rows' cache and mask every step and
removes finished rows, so every step has new shapes. Here every tensor a decode step touches
keeps its shape and address for the whole call: `slots` rows (a free slot is masked, not
removed), each layer's keys and values preallocated to `capacity` columns (transformers'
StaticLayer, written in place at one shared column), the [slots, capacity] mask, the positions
and the last tokens updated in place. That is what lets a step be captured and replayed as a CUDA
graph (lib/engine/graphs.py); on the CPU it runs eagerly and gives the dynamic engine's tokens. The
step writes at the cache's own device counter, so one capture serves every step of a call that
reads the same columns, refills and shifts included; sampling draws outside it (per-prompt generators).

Layout: as in the dynamic engine, every row writes its next token at the same column `col`, with
its own tokens right-aligned before it; a refill's prefilled suffix goes to [col - width, col)
(`col` moves right first when it is smaller: the rows already there get a masked gap). A step
attends over a window of the first columns, not the whole buffer: the smallest of a series of
widths (at most 1.25x apart, see `window_for`) that holds `col`, and when that window is more than
1.25x the columns in use (from the oldest live row's first column to `col`), or `col` reaches
`capacity` (1.25 x the longest a row can span), the live columns move to the left edge. So a
step reads at most 1.25x the columns some row uses, and the graphs are one per window, a
dozen or so per call. The shared prefix stays stored once, as in the dynamic engine. Prefill and
refill stay outside the step.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import torch

from lib.devices import to_device
from lib.engine.graphs import Capture, CudaGraphs, capture_for, warm_up
from lib.engine.kv_rows import Rows, cache_layers
from lib.engine.near_ties import NEAR_TIE_ULPS, near_tie
from lib.engine.outputs import read_back
from lib.engine.prefix_sharing import EngineStats, Generated, PrefixSharingEngine
from lib.errors import InputError, error_line


@dataclass
class Slots:
    """The fixed batch of a static decode: slot s holds prompt items[s], or nothing (None)."""

    cache: object  # transformers Cache of StaticLayers, [slots, heads, capacity, dim] per layer
    mask: torch.Tensor  # [slots, capacity] 1 = a real token of the slot's row
    positions: torch.Tensor  # [slots] position id of each slot's next token
    last: torch.Tensor  # [slots] last token of each slot
    col: int  # the column the next token is written to, the same for every slot
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


_WINDOW_LAYER = None


def _window_layer_class():
    """transformers' StaticLayer whose update returns only the first `window` columns of its
    buffers (a view: the step reads those, and the mask spans as many)."""
    global _WINDOW_LAYER
    if _WINDOW_LAYER is None:
        from transformers.cache_utils import StaticLayer

        class WindowLayer(StaticLayer):
            window: int = 0

            def update(self, key_states, value_states, *args, **kwargs):
                keys, values = super().update(key_states, value_states, *args, **kwargs)
                return keys[:, :, :self.window], values[:, :, :self.window]

            def get_mask_sizes(self, *args, **kwargs) -> tuple[int, int]:
                return self.window, 0

        _WINDOW_LAYER = WindowLayer
    return _WINDOW_LAYER


def static_cache(like: Rows, slots: int, capacity: int):
    """A cache of StaticLayers (read through a window) shaped like the prefilled rows' layers, for `slots` rows."""
    from transformers.cache_utils import Cache

    layers = []
    for source in cache_layers(like.cache):
        layer = _window_layer_class()(max_cache_len=capacity)
        layer.window = capacity
        keys, values = source.keys[:1], source.values[:1]
        # Made on the device: StaticLayer copies its host counter there, a wait for the queued work.
        layer.cumulative_length = torch.zeros((), dtype=torch.long, device=keys.device)
        shape = (slots, keys.shape[1], 1, keys.shape[-1])
        layer.lazy_initialization(keys.new_zeros(shape), values.new_zeros(shape[:3] + values.shape[-1:]))
        layers.append(layer)
    return Cache(layers=layers)


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


REFILL_SHARE = 8  # the static engine refills when 1/REFILL_SHARE of its slots are free

# auto's probe: 4 greedy tokens per prompt, replays before and after a refill, at the call's slot count
# and cache capacity (bitsandbytes and cuBLAS pick other kernels at 64 slots than at 2).
PROBE_TOKENS = 4
_AUTO_CHOICE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> {(slots, new tokens): choice}


@dataclass(frozen=True)
class DecodeChoice:
    """The decode step a call runs and why: as `hardware.decode` says, or what auto's probe found."""

    step: str  # "dynamic" or "static"
    asked: str  # hardware.decode: auto, dynamic or static
    why: str
    # auto's probe on CUDA: the widest gap, in ulps of the model's dtype, between the two tokens
    # where the steps' answers first parted (0.0: they never parted; None: no probe ran)
    probe_gap_ulps: float | None = None

    def record(self) -> dict:
        """What an evaluation's metrics keep of it."""
        return {"asked": self.asked, "step": self.step, "why": self.why, "probe_gap_ulps": self.probe_gap_ulps}


def resolve_decode(decode: str, model, tokenizer=None, prompts=(), attention: str = "auto", label: str = "",
                   slots: int = 2, max_new_tokens: int = PROBE_TOKENS) -> DecodeChoice:
    """The decode step to run: as `hardware.decode` says, and for auto the static one where its
    step is replayed as a CUDA graph and a probe at the call's shape (`slots`, the cache for
    `max_new_tokens`) gives the dynamic step's tokens up to near-ties (lib/engine/near_ties.py);
    elsewhere dynamic (eager, the static step issues as many kernels and is not faster). Auto's
    choice is printed once per model and shape, with why."""
    if decode != "auto":
        return DecodeChoice(decode, decode, "as hardware.decode says")
    choices = _AUTO_CHOICE.setdefault(model, {})
    shape = (min(slots, len(prompts)) if prompts else slots, max_new_tokens)
    if shape not in choices:
        if next(model.parameters()).device.type != "cuda":
            choice = DecodeChoice("dynamic", decode, "no CUDA graphs off CUDA, and the eager static step is not faster")
        else:
            failure, gap = probe_static(model, tokenizer, prompts, attention, *shape)
            choice = DecodeChoice("dynamic", decode, f"the CUDA-graph static step failed its probe: {failure}", gap
                                  ) if failure else DecodeChoice(
                "static", decode, "replayed as a CUDA graph; a probe gave the dynamic step's tokens"
                + (f" up to near-ties (widest {gap:.1f} ulps)" if gap else ""), gap)
        choices[shape] = choice
        if not any(known.why == choice.why for other, known in choices.items() if other != shape):
            print(f"{label}: hardware.decode auto -> {choice.step} ({choice.why})")
    return choices[shape]


def probe_static(model, tokenizer, prompts, attention: str = "auto", slots: int = 2,
                 max_new_tokens: int = PROBE_TOKENS) -> tuple[str | None, float]:
    """(why the captured static step cannot stand in for the dynamic one here, or None; the widest
    gap in ulps at which their tokens parted, 0.0 where they never did): the first `slots` + 1
    prompts, through `slots` slots over a cache sized for `max_new_tokens` (the call's own shape),
    decoded PROBE_TOKENS greedy tokens both ways (all but the first by replays, the last prompt's
    in a refilled slot) must give the same tokens, or differ first at a near-tie of the two
    likeliest (lib/engine/near_ties.py, judged on a third, one-row forward pass). No EOS stops a row
    early (a judge's one-word verdict would leave no replay to compare), and the prompts are cut
    to one length (no padding)."""
    sample = prompts[:slots + 1]
    shortest = min(len(prompt) for prompt in sample)
    sample = [list(prompt[:shortest]) for prompt in sample]
    options = dict(max_new_tokens=PROBE_TOKENS, batch_size=min(slots, len(sample)), eos_token_ids=(-1,),
                   attention=attention)
    try:
        static, _ = StaticSlotsEngine(model, tokenizer, capacity_for=max_new_tokens, **options).generate(sample)
    except Exception as error:  # a probe: whatever stops the capture or a replay means the dynamic step
        return error_line(error.__cause__ or error), math.inf
    dynamic, _ = PrefixSharingEngine(model, tokenizer, **options).generate(sample)
    widest = 0.0
    for number, (prompt, ours, theirs) in enumerate(zip(sample, static, dynamic)):
        first = next((j for j, (a, b) in enumerate(zip(ours.token_ids, theirs.token_ids)) if a != b), None)
        if first is None:
            continue
        with torch.inference_mode():
            ids = torch.tensor([prompt + theirs.token_ids[:first]], device=next(model.parameters()).device)
            logits = model(input_ids=ids).logits[0, -1]
        tie, gap = near_tie(logits, ours.token_ids[first], theirs.token_ids[first], next(model.parameters()).dtype)
        widest = max(widest, gap)
        if not tie:
            where = f"{gap:.1f} ulps apart" if math.isfinite(gap) else "not the two likeliest"
            return (f"prompt {number}: tokens {ours.token_ids} where the dynamic step gives {theirs.token_ids}"
                    f" (at token {first}: {where}, {NEAR_TIE_ULPS} forgiven)"), widest
    return None, widest


class StaticSlotsEngine(PrefixSharingEngine):
    """The prefix-sharing engine with a static-shape decode step (`hardware.decode: static`): replayed
    as a CUDA graph on CUDA, eager elsewhere. `capture` replaces how the step is recorded (None: eager).

    A prefill's first tokens stay on the device (in the slots' `last`) and are read with the next
    block's: one read per block, refills included. A newcomer whose first token ends it therefore
    keeps its slot for one block (its block's tokens are discarded, counted as wasted)."""

    decode_mode = "static"  # eager; an instance replaying a CUDA graph says "static-cuda-graph"
    reads_first_tokens = False

    def __init__(self, *args, capture: Capture | None | str = "device", capacity_for: int | None = None,
                 fallback: bool = False, **options):
        """`capacity_for`: the new tokens the cache is sized for (default max_new_tokens; auto's probe
        decodes a few tokens in the call's cache). `fallback` (hardware.decode auto): a step that
        cannot be captured runs eagerly, said in one line, instead of stopping."""
        super().__init__(*args, **options)
        self.capture = capture_for(self.device) if capture == "device" else capture
        self.decode_mode = "static-cuda-graph" if isinstance(self.capture, CudaGraphs) else "static"
        self.capacity_for = capacity_for
        self.fallback = fallback
        self._idle: torch.Generator | None = None  # draws the ignored tokens of free slots when sampling
        self._stats = EngineStats()  # the call's, while it runs

    def _generate_after_prefix(self, prompts, prefix_len: int, stats: EngineStats, progress, in_order: bool,
                               on_result) -> list[Generated]:
        pending = self._queue(prompts, in_order)
        results: list[Generated | None] = [None] * len(prompts)
        self._stats = stats
        self._suffix_lengths = [len(p) - prefix_len for p in prompts]
        self._width = max(self._suffix_lengths)
        slot_count = min(self.batch_size, len(prompts))
        first = self._prefill(prefix_len, prompts, [pending.popleft() for _ in range(slot_count)], stats)
        slots = self._empty_slots(first, slot_count, self._capacity())
        self._place(slots, first, list(range(slot_count)))
        # Refills wait until an eighth of the slots are free (or none decodes): a refill is a prefill
        # of its own (thousands of kernels and a read of the first tokens), while a free static slot
        # costs only its share of a step that runs anyway. At 64 slots and 2-3 answers ending per
        # 8-step block, refilling at every block would add a prefill to nearly every block.
        refill_at = max(1, slot_count // REFILL_SHARE)
        while True:
            self._retire_finished(slots, results, stats, progress, on_result)
            free = [slot for slot, item in enumerate(slots.items) if item is None]
            if len(free) < min(refill_at, len(pending)) and len(free) < slot_count:
                free = []  # keep decoding; refill when enough slots are free
            while free and pending:
                stats.refills += 1
                newcomers = [pending.popleft() for _ in range(min(len(free), len(pending)))]
                self._place(slots, self._prefill(prefix_len, prompts, newcomers, stats), free[: len(newcomers)])
                free = free[len(newcomers):]
            if all(item is None for item in slots.items):
                return results
            self._decode_block(slots, stats)

    def _capacity(self) -> int:
        """Columns a slot holds: the longest a row can span (suffix, new tokens, a block's overrun
        after its stop) and a quarter more. A row spans at most `longest` columns back from `col`,
        so a shift at the last column frees at least the quarter (steps read through their window,
        not the whole buffer: see `_compact`)."""
        longest = self._width + (self.capacity_for or self.max_new_tokens) + self.steps_per_sync
        return longest + max(longest // 4, 1)

    def _empty_slots(self, like: Rows, slot_count: int, capacity: int) -> Slots:
        device = like.mask.device
        return Slots(cache=static_cache(like, slot_count, capacity),
                     mask=torch.zeros((slot_count, capacity), dtype=like.mask.dtype, device=device),
                     positions=torch.zeros(slot_count, dtype=like.positions.dtype, device=device),
                     last=torch.zeros(slot_count, dtype=like.last.dtype, device=device), col=like.mask.shape[1],
                     items=[None] * slot_count, generated=[[] for _ in range(slot_count)],
                     starts=[None] * slot_count, unread=[False] * slot_count)

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
            slots.starts[slot] = slots.col - self._suffix_lengths[fresh.items[row]]  # after its padding
            slots.unread[slot] = not self.reads_first_tokens

    def _retire_finished(self, rows, results, stats: EngineStats, progress, on_result) -> list[int]:
        finished = super()._retire_finished(rows, results, stats, progress, on_result)
        for slot in finished:  # the slot is free: masked until a newcomer takes it
            rows.items[slot], rows.generated[slot], rows.starts[slot] = None, [], None
            rows.mask[slot] = 0
        return finished

    def _decode_block(self, rows: Slots, stats: EngineStats) -> None:
        """Up to steps_per_sync static steps, then one copy of their tokens, with the first tokens
        of the slots filled since the last block; a free slot's tokens are computed and ignored,
        as are a row's after its stop (counted as wasted)."""
        counted = [len(tokens) + unread for tokens, unread in zip(rows.generated, rows.unread)]
        steps = min(self.steps_per_sync, self.max_new_tokens - max(counted))
        unread = any(rows.unread)
        # A block of newcomers that all end at their first token (max_new_tokens 1) needs no step.
        steps = steps if unread else max(steps, 1)
        block = [rows.last.clone()] if unread else []
        for _ in range(steps):
            self._decode_step(rows)
            block.append(rows.last.clone())
        for slot, (item, tokens, new) in enumerate(zip(rows.items, rows.generated,
                                                       read_back(torch.stack(block, dim=1), stats))):
            first = unread and rows.unread[slot]
            new = new if first or not unread else new[1:]  # column 0: the first tokens, read for new slots only
            taken = 0 if item is None else self._extend(item, tokens, new)
            stats.decode_wasted += steps - max(taken - first, 0)
            rows.unread[slot] = False
        stats.decode_positions += steps * len(rows.items)

    def _decode_step(self, rows: Slots) -> None:
        """One token for every slot: the fixed-tensor body over its window (eager, or replayed as
        that window's captured graph), then the next tokens from its logits (sampling draws with
        per-prompt generators, outside it)."""
        self._compact(rows)
        window = window_for(rows.col + 1, rows.capacity)
        rows.use_window(window)
        step = rows.steps.get(window)
        logits = self._new_step(rows, window) if step is None else step()
        self._stats.kv_columns_read += window
        self._stats.kv_columns_in_use += rows.col + 1 - rows.first_used()
        rows.col += 1
        rows.last.copy_(self._next_tokens(logits, rows.items))

    def _new_step(self, rows: Slots, window: int) -> torch.Tensor:
        """The first step over this window, eager (a capture's warm-up: kernels chosen, workspaces
        made at this shape); the body is then captured for the window's later steps."""
        body = partial(step_body, self.model, rows, window)
        logits = warm_up(body, self.device)
        try:
            rows.steps[window] = self.capture(body) if self.capture else body
        except RuntimeError as error:
            if not self.fallback:
                raise InputError(f"hardware.decode=static: the decode step could not be captured"
                                 f" ({error_line(error)}); set hardware.decode=dynamic") from error
            print(f"hardware.decode auto: the decode step could not be captured ({error_line(error)});"
                  " running the static step eagerly (the same tokens, without the graph's speed)")
            self.capture, self.decode_mode = None, "static"
            rows.steps = {width: partial(step_body, self.model, rows, width) for width in [*rows.steps, window]}
        return logits

    def _next_tokens(self, logits: torch.Tensor, items: list[int | None]) -> torch.Tensor:
        """Greedy for every slot, or a draw for every slot: a slot's prompt's own generator, a free
        slot the engine's idle one (its token is ignored). Drawing all slots, rather than indexing
        the active ones with a host list, copies nothing from the host and reads nothing back; a
        prompt's generator still advances once per step of its own, whatever shares the batch."""
        if self.sampling is None:
            return logits.argmax(-1)
        if self._idle is None:
            self._idle = torch.Generator(device=self.device).manual_seed(0)
        return self.sampling.draw(logits, [self._generators[item] if item is not None else self._idle
                                           for item in items])

    def _compact(self, rows: Slots) -> None:
        """Move the live columns to the left edge when the next step has no column left, or would
        read more than READ_BOUND x the columns in use through its window."""
        first_used = rows.first_used()
        in_use = rows.col + 1 - first_used
        window = window_for(rows.col + 1, rows.capacity)
        if rows.col < rows.capacity and (window <= READ_BOUND * in_use or window == window_for(1, rows.capacity)):
            return
        self._shift(rows, first_used)

    def _shift(self, rows: Slots, shift: int) -> None:
        """Move every slot left by `shift` columns (those before the first a live row uses)."""
        # The host knows where each row's tokens start (a row spans at most `longest` columns back
        # from col, see _capacity; the padding before its tokens may go).
        if shift <= 0:
            raise InputError("generation: a static decode ran out of cache columns (a row longer than its bound)")
        kept = rows.col - shift  # only the columns before col hold anything; the rest is masked
        for layer in rows.cache.layers:
            layer.keys[:, :, :kept] = layer.keys[:, :, shift:rows.col].clone()
            layer.values[:, :, :kept] = layer.values[:, :, shift:rows.col].clone()
        rows.mask[:, :kept] = rows.mask[:, shift:rows.col].clone()
        rows.mask[:, kept:].zero_()  # in place, not a host scalar turned into a tensor
        rows.starts = [None if start is None else start - shift for start in rows.starts]
        self._stats.shifts += 1
        rows.move_to(kept)
