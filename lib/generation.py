"""Greedy batched generation that shares the prompts' common prefix and refills finished slots.

Two things waste most of the time of a plain batched `generate` on k-shot GSM8K prompts:
- every prompt starts with the same few-shot block, which is prefilled again for each one;
- a batch runs until its slowest answer stops, so finished sequences keep their slot.
This engine computes the KV cache of the longest common token prefix once, and keeps up to
`batch_size` sequences decoding together: a sequence leaves the batch as soon as it stops (EOS,
a stop string, or max_new_tokens) and the next prompt's suffix is prefilled into its place.

The prefix's keys and values are kept once, not copied into every row: the model runs with the
attention function `prefix_shared` (registered through transformers' AttentionInterface), which
attends each query to the shared prefix and to its row's own cached tokens under one softmax.
Reading the prefix once per step instead of once per row is what makes wide batches cheap.

Layout of a row's own cache: its tokens are right-aligned, with masked (zero) columns before them
where rows differ in length. Position ids continue after the prefix and follow each row's real
tokens, so RoPE sees the same positions as in a single-sequence run; columns no row uses are
dropped as rows leave.
"""

from __future__ import annotations

import time
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from lib.errors import InputError


PREFILL_ROWS = 8  # prompts prefilled per forward pass: enough work per pass, little padding


@dataclass
class Generated:
    token_ids: list[int]  # generated ids, the stopping EOS excluded
    text: str
    stop_reason: str  # "eos", "stop_string" or "max_new_tokens"
    first_token_probs: list[float] | None = None  # P(each of `score_token_ids`) at the first step


@dataclass
class EngineStats:
    prompts: int = 0
    prefix_tokens: int = 0  # computed once for all prompts
    suffix_tokens: int = 0  # real prompt tokens prefilled after the prefix
    prefill_padding: int = 0  # padded positions computed in batched prefills
    decode_positions: int = 0  # positions computed by decode steps
    decode_wasted: int = 0  # decode positions of rows that had already stopped (measured each step)
    generated_tokens: int = 0
    seconds: float = 0.0

    def prefill_tokens_per_prompt(self) -> float:
        """Prefill positions computed per prompt, the shared prefix counted once."""
        computed = self.prefix_tokens + self.suffix_tokens + self.prefill_padding
        return computed / max(self.prompts, 1)

    def wasted_share(self) -> float:
        """Share of computed positions (prefill + decode) spent on padding or stopped rows."""
        wasted = self.prefill_padding + self.decode_wasted
        computed = self.prefix_tokens + self.suffix_tokens + self.prefill_padding + self.decode_positions
        return wasted / max(computed, 1)


@dataclass
class _Rows:
    """The sequences decoding together, row i of every field belonging to one prompt."""

    cache: object  # transformers DynamicCache, batch = len(items)
    mask: torch.Tensor  # [rows, columns] 1 = real token
    positions: torch.Tensor  # [rows] position id of each row's next token
    last: torch.Tensor  # [rows] last generated token
    items: list[int] = field(default_factory=list)  # prompt index of each row
    generated: list[list[int]] = field(default_factory=list)


class PrefixSharingEngine:
    def __init__(self, model, tokenizer, max_new_tokens: int, batch_size: int,
                 stop_strings: tuple[str, ...] = (), eos_token_ids: tuple[int, ...] | None = None,
                 score_token_ids: tuple[int, ...] = ()):
        self.model = model
        self.tokenizer = tokenizer
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self.stop_strings = tuple(stop_strings)
        self.eos = set(eos_token_ids or _eos_ids(model, tokenizer))
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(self.eos)
        self.device = next(model.parameters()).device
        # Enough tokens to see any stop string in decoded text (a token is at least one char).
        self.stop_window = max((len(s) for s in self.stop_strings), default=0) + 4
        self.score_token_ids = list(score_token_ids)  # e.g. a guard's "safe"/"unsafe" first tokens
        self._first_probs: dict[int, list[float]] = {}

    @torch.inference_mode()
    def generate(self, prompts: list[list[int]], progress=None) -> tuple[list[Generated], EngineStats]:
        """Greedy continuations of token-id prompts, in input order."""
        stats = EngineStats(prompts=len(prompts))
        if not prompts:
            return [], stats
        start = time.perf_counter()
        prefix_len = common_prefix_length(prompts)
        with shared_prefix(self.model, self._forward_prefix(prompts[0][:prefix_len])):
            results = self._generate_after_prefix(prompts, prefix_len, stats, progress)
        stats.prefix_tokens = prefix_len
        stats.seconds = time.perf_counter() - start
        return results, stats

    def _generate_after_prefix(self, prompts, prefix_len: int, stats: EngineStats, progress) -> list[Generated]:
        # Longest suffixes first: similar lengths prefill together, and later (shorter) newcomers
        # fit into the columns the batch already has.
        pending = deque(sorted(range(len(prompts)), key=lambda i: -len(prompts[i])))
        results: list[Generated | None] = [None] * len(prompts)
        newcomers = [pending.popleft() for _ in range(min(self.batch_size, len(pending)))]
        rows = self._prefill(prefix_len, prompts, newcomers, stats)
        while True:
            free = self._retire_finished(rows, results, stats, progress)
            while free and pending:
                newcomers = [pending.popleft() for _ in range(min(len(free), len(pending)))]
                rows = _place(rows, self._prefill(prefix_len, prompts, newcomers, stats), free[: len(newcomers)])
                # A newcomer whose first token already ends it frees its slot again at once.
                free = free[len(newcomers):] + self._retire_finished(rows, results, stats, progress)
            if free:  # nothing left to start: drop the finished rows rather than decode them
                _drop(rows, free)
            if not rows.items:
                return results
            rows = _compact(rows)
            # Counted, not assumed: a row whose result is set would be a decode position spent after its stop.
            stats.decode_wasted += sum(results[item] is not None for item in rows.items)
            self._decode_step(rows, stats)

    def _forward_prefix(self, prefix_ids: list[int]):
        """The prefix's per-layer (keys, values), batch 1; None when there is no common prefix."""
        if not prefix_ids:
            return None
        cache = _new_cache()
        self.model(input_ids=torch.tensor([prefix_ids], device=self.device), past_key_values=cache, use_cache=True,
                   logits_to_keep=1)  # only the cache is needed; vocabulary logits are costly
        return [(layer.keys, layer.values) for layer in _layers(cache)]

    def _prefill(self, prefix_len: int, prompts: list[list[int]], items: list[int], stats: EngineStats) -> _Rows:
        """Prefill the prompts' suffixes after the shared prefix, in groups of PREFILL_ROWS.

        Items come longest first, so each group pads little; padding the joined cache costs
        memory only, not computation.
        """
        groups = [items[i:i + PREFILL_ROWS] for i in range(0, len(items), PREFILL_ROWS)]
        parts = [self._prefill_group(prefix_len, prompts, group, stats) for group in groups]
        return parts[0] if len(parts) == 1 else _concat(parts)

    def _prefill_group(self, prefix_len: int, prompts: list[list[int]], items: list[int],
                       stats: EngineStats) -> _Rows:
        """Prefill the prompts' suffixes (left-padded to the longest) after the shared prefix."""
        suffixes = [prompts[i][prefix_len:] for i in items]
        width = max(len(s) for s in suffixes)
        ids = torch.full((len(suffixes), width), self.pad_id, dtype=torch.long)
        suffix_mask = torch.zeros((len(suffixes), width), dtype=torch.long)
        positions = torch.full((len(suffixes), width), prefix_len, dtype=torch.long)
        for row, suffix in enumerate(suffixes):
            ids[row, width - len(suffix):] = torch.tensor(suffix)
            suffix_mask[row, width - len(suffix):] = 1
            positions[row, width - len(suffix):] = torch.arange(prefix_len, prefix_len + len(suffix))
        out = self.model(input_ids=ids.to(self.device), attention_mask=suffix_mask.to(self.device),
                         position_ids=positions.to(self.device), past_key_values=_new_cache(), use_cache=True,
                         cache_position=torch.arange(width, device=self.device), logits_to_keep=1)
        stats.suffix_tokens += sum(len(s) for s in suffixes)
        stats.prefill_padding += width * len(suffixes) - sum(len(s) for s in suffixes)
        first = out.logits[:, -1].argmax(-1).cpu()
        if self.score_token_ids:
            probs = out.logits[:, -1].float().softmax(-1)[:, self.score_token_ids].cpu()
            self._first_probs.update({item: row.tolist() for item, row in zip(items, probs)})
        return _Rows(cache=out.past_key_values, mask=suffix_mask, positions=torch.tensor([prefix_len + len(s) for s in suffixes]),
                     last=first, items=list(items), generated=[[int(t)] for t in first])

    def _decode_step(self, rows: _Rows, stats: EngineStats) -> None:
        columns = rows.mask.shape[1]
        mask = torch.cat([rows.mask, torch.ones((len(rows.items), 1), dtype=torch.long)], dim=1)
        out = self.model(input_ids=rows.last[:, None].to(self.device), attention_mask=mask.to(self.device),
                         position_ids=rows.positions[:, None].to(self.device), past_key_values=rows.cache,
                         use_cache=True, cache_position=torch.tensor([columns], device=self.device))
        rows.cache, rows.mask = out.past_key_values, mask
        rows.positions += 1
        rows.last = out.logits[:, -1].argmax(-1).cpu()
        for row, token in enumerate(rows.last.tolist()):
            rows.generated[row].append(token)
        stats.decode_positions += len(rows.items)

    def _retire_finished(self, rows: _Rows, results, stats: EngineStats, progress) -> list[int]:
        """Record the rows that stopped; their slots are returned to be refilled or dropped."""
        free = []
        for row, item in enumerate(rows.items):
            if results[item] is not None:
                continue
            outcome = self._stopped(rows.generated[row])
            if outcome is None:
                continue
            outcome.first_token_probs = self._first_probs.pop(item, None)
            results[item] = outcome
            free.append(row)
            stats.generated_tokens += len(rows.generated[row])
            if progress is not None:
                progress.update(1)
                elapsed = max(progress.format_dict["elapsed"], 1e-9)
                progress.set_postfix(tokens_per_s=f"{stats.generated_tokens / elapsed:.1f}")
        return free

    def _stopped(self, tokens: list[int]) -> Generated | None:
        if tokens[-1] in self.eos:
            return self._result(tokens[:-1], "eos")
        if self.stop_strings:
            tail = self.tokenizer.decode(tokens[-self.stop_window:], skip_special_tokens=True)
            if any(stop in tail for stop in self.stop_strings):
                return self._result(tokens, "stop_string")
        if len(tokens) >= self.max_new_tokens:
            return self._result(tokens, "max_new_tokens")
        return None

    def _result(self, tokens: list[int], reason: str) -> Generated:
        text = self.tokenizer.decode(tokens, skip_special_tokens=True)
        if reason == "stop_string":
            # Cut at the first stop string; the tokens keep what was generated.
            text = text[: min(text.find(s) for s in self.stop_strings if s in text)]
        return Generated(tokens, text, reason)


def common_prefix_length(prompts: list[list[int]]) -> int:
    """Length of the longest common token prefix, leaving every prompt at least one token."""
    shortest = min(len(p) for p in prompts)
    if shortest == 0:
        raise InputError("an empty prompt cannot be generated from")
    first = prompts[0]
    length = 0
    while length < shortest - 1 and all(p[length] == first[length] for p in prompts):
        length += 1
    return length


def _eos_ids(model, tokenizer) -> set[int]:
    configured = model.generation_config.eos_token_id
    ids = set(configured if isinstance(configured, list) else [configured] if configured is not None else [])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids


def _new_cache():
    """A DynamicCache whose layers grow in place (see _GrowableLayer)."""
    from transformers import DynamicCache

    cache = DynamicCache()
    cache.layer_class_to_replicate = _growable_layer_class()
    return cache


_GROWABLE = None


def _growable_layer_class():
    """DynamicLayer appends with torch.cat, copying the whole cache at every decode step; this
    layer writes into a buffer with spare room (doubling when full) and returns views of it."""
    global _GROWABLE
    if _GROWABLE is not None:
        return _GROWABLE
    from transformers.cache_utils import DynamicLayer

    class GrowableLayer(DynamicLayer):
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

    _GROWABLE = GrowableLayer
    return _GROWABLE


def _layers(cache):
    for layer in cache.layers:
        if not isinstance(layer, _growable_layer_class()):
            raise InputError(f"generation: cache layer {type(layer).__name__} is not supported (plain attention only)")
    return cache.layers


def _build_cache(keys_values: list[tuple[torch.Tensor, torch.Tensor]]):
    cache = _new_cache()
    for index, (keys, values) in enumerate(keys_values):
        cache.update(keys, values, index)
    return cache


def _pad_columns(tensor: torch.Tensor, at: int, count: int, dim: int) -> torch.Tensor:
    """Insert `count` zero columns at index `at` along `dim`."""
    if count == 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = count
    zeros = torch.zeros(shape, dtype=tensor.dtype, device=tensor.device)
    return torch.cat([tensor.narrow(dim, 0, at), zeros, tensor.narrow(dim, at, tensor.shape[dim] - at)], dim=dim)


def _concat(parts: list[_Rows]) -> _Rows:
    """One batch from several, their columns right-aligned (masked columns added on the left)."""
    width = max(part.mask.shape[1] for part in parts)
    padded = [_rebuild(part, list(range(len(part.items))), extra=width - part.mask.shape[1]) for part in parts]
    layers = [(torch.cat([_layers(p.cache)[i].keys for p in padded]), torch.cat([_layers(p.cache)[i].values for p in padded]))
              for i in range(len(_layers(padded[0].cache)))]
    return _Rows(cache=_build_cache(layers), mask=torch.cat([p.mask for p in padded]),
                 positions=torch.cat([p.positions for p in padded]), last=torch.cat([p.last for p in padded]),
                 items=[i for p in padded for i in p.items], generated=[g for p in padded for g in p.generated])


def _place(rows: _Rows, fresh: _Rows, slots: list[int]) -> _Rows:
    """Write freshly prefilled rows into finished rows' slots, in place.

    Their columns are right-aligned with the batch's; only when they need more columns than the
    batch has is the batch copied, with masked columns inserted on the left.
    """
    width = rows.mask.shape[1]
    if fresh.mask.shape[1] > width:
        rows = _rebuild(rows, list(range(len(rows.items))), extra=fresh.mask.shape[1] - width)
        width = rows.mask.shape[1]
    own = fresh.mask.shape[1]
    index = torch.tensor(slots, dtype=torch.long)
    for layer, new in zip(_layers(rows.cache), _layers(fresh.cache)):
        for buffer, source in zip(layer.buffers, (new.keys, new.values)):
            buffer[index, :, :width] = 0
            buffer[index, :, width - own:width] = source.to(buffer.device)
    rows.mask[index] = 0
    rows.mask[index, width - own:] = fresh.mask
    rows.positions[index], rows.last[index] = fresh.positions, fresh.last
    for slot, item, generated in zip(slots, fresh.items, fresh.generated):
        rows.items[slot], rows.generated[slot] = item, generated
    return rows


def _drop(rows: _Rows, slots: list[int]) -> None:
    """Remove rows in place: the last row moves into each freed slot, then the batch is one
    shorter (a view of the same buffers, so nothing else is copied)."""
    for slot in sorted(slots, reverse=True):
        last = len(rows.items) - 1
        if slot != last:
            for layer in _layers(rows.cache):
                for buffer in layer.buffers:
                    buffer[slot] = buffer[last]
            for tensor in (rows.mask, rows.positions, rows.last):
                tensor[slot] = tensor[last]
            rows.items[slot], rows.generated[slot] = rows.items[last], rows.generated[last]
        for layer in _layers(rows.cache):
            layer.buffers = tuple(buffer[:last] for buffer in layer.buffers)
            layer.keys, layer.values = layer.buffers[0][:, :, :layer.length], layer.buffers[1][:, :, :layer.length]
        rows.mask, rows.positions, rows.last = rows.mask[:last], rows.positions[:last], rows.last[:last]
        rows.items.pop()
        rows.generated.pop()


def _rebuild(rows: _Rows, keep: list[int], extra: int = 0) -> _Rows:
    """A copy with the kept rows only, without the columns none of them uses, and with `extra`
    masked columns on the left."""
    index = torch.tensor(keep, dtype=torch.long)
    mask = rows.mask[index]
    columns = mask.any(dim=0).nonzero().squeeze(1)
    mask = _pad_columns(mask[:, columns], 0, extra, 1)
    layers = []
    if keep:
        device = _layers(rows.cache)[0].keys.device
        rows_at, columns_at = index.to(device), columns.to(device)
        layers = [(_pad_columns(layer.keys[rows_at][:, :, columns_at], 0, extra, 2),
                   _pad_columns(layer.values[rows_at][:, :, columns_at], 0, extra, 2))
                  for layer in _layers(rows.cache)]
    return _Rows(cache=_build_cache(layers), mask=mask, positions=rows.positions[index], last=rows.last[index],
                 items=[rows.items[i] for i in keep], generated=[rows.generated[i] for i in keep])


def _compact(rows: _Rows, slack: float = 0.25) -> _Rows:
    """Drop unused columns once they are more than `slack` of the batch's columns."""
    unused = int((~rows.mask.bool().any(dim=0)).sum())
    if unused <= slack * rows.mask.shape[1]:
        return rows
    return _rebuild(rows, list(range(len(rows.items))))




# The shared-prefix attention -----------------------------------------------------------------

ATTENTION_NAME = "prefix_shared"


@contextmanager
def shared_prefix(model, prefix_kv):
    """Run `model` with attention to `prefix_kv` (per-layer keys/values of batch 1) in front of
    every row's own cache; restores the model's attention implementation afterwards."""
    _register_attention()
    modules = [m for m in model.modules() if hasattr(m, "layer_idx") and hasattr(m, "k_proj")]
    previous = model.config._attn_implementation
    model.set_attn_implementation(ATTENTION_NAME)
    for module in modules:
        module.shared_prefix_kv = prefix_kv[module.layer_idx] if prefix_kv else None
    try:
        yield
    finally:
        for module in modules:
            module.shared_prefix_kv = None
        model.set_attn_implementation(previous)


def _register_attention() -> None:
    from transformers import AttentionInterface, AttentionMaskInterface
    from transformers.masking_utils import sdpa_mask

    def explicit_mask(*args, **kwargs):
        # Always a boolean mask (True = attend); never "None, use is_causal".
        kwargs["allow_is_causal_skip"] = False
        return sdpa_mask(*args, **kwargs)

    AttentionInterface.register(ATTENTION_NAME, prefix_shared_attention)
    AttentionMaskInterface.register(ATTENTION_NAME, explicit_mask)


def prefix_shared_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """Softmax attention over [shared prefix ; the row's own keys], the prefix read once for all rows.

    query [B, Hq, q, D]; key/value [B, Hkv, S, D] (the rows' own cache); attention_mask a boolean
    [B, 1, q, S] over the own part (the prefix is visible to every query).
    """
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    prefix = getattr(module, "shared_prefix_kv", None)
    if prefix is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout,
                                      **kwargs)
    prefix_keys, prefix_values = prefix
    batch, query_heads, length, dim = query.shape
    kv_heads = key.shape[1]
    groups = query_heads // kv_heads
    scale = scaling if scaling is not None else dim ** -0.5
    # Query heads h*groups .. h*groups+groups-1 share key/value head h (as repeat_kv orders them).
    grouped = query.reshape(batch, kv_heads, groups * length, dim)
    # Against the prefix, all rows' queries of a head form one matrix: one product per head,
    # the prefix read once (broadcasting over the batch would copy it for every row).
    rows_by_head = grouped.transpose(0, 1).reshape(kv_heads, batch * groups * length, dim)
    prefix_scores = torch.bmm(rows_by_head, prefix_keys[0].transpose(-1, -2)) * scale
    prefix_scores = prefix_scores.reshape(kv_heads, batch, groups * length, -1).transpose(0, 1)
    own_scores = torch.matmul(grouped, key.transpose(-1, -2)) * scale
    if attention_mask is not None:
        allowed = attention_mask[:, :, None].expand(batch, 1, groups, length, key.shape[2])
        own_scores = own_scores.masked_fill(~allowed.reshape(batch, 1, groups * length, key.shape[2]), float("-inf"))
    weights = torch.cat([prefix_scores, own_scores], dim=-1).softmax(dim=-1, dtype=torch.float32).to(query.dtype)
    split = prefix_keys.shape[2]
    prefix_weights = weights[..., :split].transpose(0, 1).reshape(kv_heads, batch * groups * length, split)
    from_prefix = torch.bmm(prefix_weights, prefix_values[0]).reshape(kv_heads, batch, groups * length, dim)
    output = from_prefix.transpose(0, 1) + torch.matmul(weights[..., split:], value)
    return output.reshape(batch, query_heads, length, dim).transpose(1, 2).contiguous(), None
