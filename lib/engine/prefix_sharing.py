"""Batched generation (greedy, or seeded sampling) that shares the prompts' common prefix and refills finished slots.

Two things waste most of the time of a plain batched `generate` on k-shot GSM8K prompts:
- every prompt starts with the same few-shot block, which is prefilled again for each one;
- a batch runs until its slowest answer stops, so finished sequences keep their slot.
This engine computes the KV cache of the longest common token prefix once, and keeps up to
`batch_size` sequences decoding together: a sequence leaves the batch as soon as it stops (EOS,
a stop string, or max_new_tokens) and the next prompt's suffix is prefilled into its place.

The prefix's keys and values are kept once, not copied into every row (lib/engine/attention.py);
the rows' own caches are kept by lib/engine/kv_rows.py. Position ids continue after the prefix and follow
each row's real tokens, so RoPE sees the same positions as in a single-sequence run.

On a GPU, reading each step's tokens back to the host would make the host wait for the device at
every step, leaving it idle while the next step is queued. The rows' state (last tokens, positions,
mask) stays on the device, and decode steps run in blocks of `steps_per_sync`: the block's tokens are
copied back once, stops are found in them, and tokens a row computed after its stop are discarded
(counted in `decode_wasted`). Results are the same for any block length; on the CPU there is no
wait to hide, so blocks are one step there unless asked otherwise.

Decoding is greedy unless a `Sampling` is given: then each prompt draws its tokens with its own
random generator, seeded by the caller per prompt, so a prompt's sample does not depend on which
other prompts share its batch, chunk or process (up to float ties in the logits).
"""

from __future__ import annotations

import time
from collections import deque

import torch

from lib.devices import to_device
from lib.engine.attention import model_kernel, shared_prefix
from lib.engine.dynamic import DynamicStep
from lib.engine.kv_rows import Rows, cache_layers, concat, new_cache
from lib.engine.outputs import EngineStats, Generated, StopRules, eos_ids, read_back
from lib.engine.sampling import Sampling
from lib.errors import InputError

PREFILL_ROWS = 8  # prompts prefilled per forward pass: enough work per pass, little padding
# A stopped row idles <= 7 steps (~2% of a ~200-token GSM8K answer on average) to keep the GPU fed.
CUDA_STEPS_PER_SYNC = 8


class PrefixSharingEngine:
    """The generation engine: the shared prefix computed once, slots refilled as rows finish, and a
    pluggable decode step (`step`): DynamicStep (lib/engine/dynamic.py, the default) or StaticStep
    (lib/engine/static.py, replayed as a CUDA graph on CUDA). The loop, prefills, stops, sampling
    and results are the engine's; how the batch is held and stepped is the step's."""

    def __init__(self, model, tokenizer, max_new_tokens: int, batch_size: int,
                 stop_strings: tuple[str, ...] = (), eos_token_ids: tuple[int, ...] | None = None,
                 score_token_ids: tuple[int, ...] = (), sampling: Sampling | None = None, attention: str = "auto",
                 steps_per_sync: int | None = None, step=None, decode_choice=None):
        self.model = model
        self.tokenizer = tokenizer
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self.stop_strings = tuple(stop_strings)
        self.eos = set(eos_token_ids or eos_ids(model, tokenizer))
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(self.eos)
        self.device = next(model.parameters()).device
        self.stops = StopRules(tokenizer, self.eos, self.stop_strings, max_new_tokens)
        self.score_token_ids = list(score_token_ids)  # e.g. a guard's "safe"/"unsafe" first tokens
        self.sampling = sampling
        self.kernel = model_kernel(model, attention)  # shared-prefix attention (lib/engine/attention.py)
        self.steps_per_sync = steps_per_sync or (CUDA_STEPS_PER_SYNC if self.device.type == "cuda" else 1)
        self.step = step or DynamicStep()
        self.decode_choice = decode_choice  # why this step (lib/engine/decode_choice.py), where it was chosen
        # One call's state, reset by `generate`:
        self.generators: dict[int, torch.Generator] = {}  # prompt index -> its own generator (sampling)
        self._first_probs: dict[int, list[float]] = {}
        self._stopped_rows: dict[int, Generated] = {}  # prompt index -> its result, found but not yet retired

    @property
    def decode_mode(self) -> str:
        """The decode step that runs, for the records: dynamic, static or static-cuda-graph."""
        return self.step.mode

    def attention_kernel(self) -> str:
        """The shared-prefix attention kernel this engine runs ("auto" resolved), for the records."""
        return self.kernel

    @torch.inference_mode()
    def generate(self, prompts: list[list[int]], progress=None, seeds: list[int] | None = None,
                 in_order: bool = False, on_result=None) -> tuple[list[Generated], EngineStats]:
        """Continuations of token-id prompts, in input order: greedy, or sampled with one seed per prompt.

        Prompts start longest first, or in the given order with `in_order` (a caller that streams
        chunks); on_result(index, Generated) is called as each one finishes."""
        stats = EngineStats(prompts=len(prompts))
        if not prompts:
            return [], stats
        if (self.sampling is None) != (seeds is None) or (seeds is not None and len(seeds) != len(prompts)):
            raise ValueError("sampling needs one seed per prompt, and greedy decoding none")
        self.generators = {} if seeds is None else {
            item: torch.Generator(device=self.device).manual_seed(seed) for item, seed in enumerate(seeds)}
        self._stopped_rows, self._first_probs = {}, {}
        start = time.perf_counter()
        prefix_len = common_prefix_length(prompts)
        with shared_prefix(self.model, self._forward_prefix(prompts[0][:prefix_len]), self.kernel):
            results = self._generate_after_prefix(prompts, prefix_len, stats, progress, in_order, on_result)
        stats.prefix_tokens = prefix_len
        stats.seconds = time.perf_counter() - start
        return results, stats

    def _generate_after_prefix(self, prompts, prefix_len: int, stats: EngineStats, progress, in_order: bool,
                               on_result) -> list[Generated]:
        pending = self._queue(prompts, in_order)
        results: list[Generated | None] = [None] * len(prompts)
        slot_count = min(self.batch_size, len(prompts))
        first = self._prefill(prefix_len, prompts, [pending.popleft() for _ in range(slot_count)], stats)
        batch = self.step.start(self, first, [len(p) - prefix_len for p in prompts], stats)
        while True:
            free = self._retire_finished(batch, results, stats, progress, on_result)
            self.step.release(batch, free)
            free = self.step.refillable(batch, free, len(pending))
            while free and pending:
                newcomers = [pending.popleft() for _ in range(min(len(free), len(pending)))]
                batch = self.step.place(self, batch, self._prefill(prefix_len, prompts, newcomers, stats),
                                        free[:len(newcomers)], stats)
                # A newcomer whose first token (read at once) already ends it frees its slot again.
                finished = self._retire_finished(batch, results, stats, progress, on_result)
                self.step.release(batch, finished)
                free = free[len(newcomers):] + finished
            batch = self.step.settle(batch, free)
            if batch is None:
                return results
            self.step.decode_block(self, batch, stats)

    @staticmethod
    def _queue(prompts: list[list[int]], in_order: bool) -> deque:
        """The prompt indices in the order they start: as given, or longest first (similar lengths
        prefill together, and later, shorter newcomers fit into the columns the batch has)."""
        indices = range(len(prompts))
        return deque(indices if in_order else sorted(indices, key=lambda i: -len(prompts[i])))

    def _forward_prefix(self, prefix_ids: list[int]):
        """The prefix's per-layer (keys, values), batch 1; None when there is no common prefix."""
        if not prefix_ids:
            return None
        cache = new_cache()
        self.model(input_ids=to_device(torch.tensor([prefix_ids]), self.device), past_key_values=cache, use_cache=True,
                   logits_to_keep=1)  # only the cache is needed; vocabulary logits are costly
        return [(layer.keys, layer.values) for layer in cache_layers(cache)]

    def _prefill(self, prefix_len: int, prompts: list[list[int]], items: list[int], stats: EngineStats) -> Rows:
        """Prefill the prompts' suffixes after the shared prefix, in groups of PREFILL_ROWS.

        Items come longest first, so each group pads little; padding the joined cache costs
        memory only, not computation.
        """
        groups = [items[i:i + PREFILL_ROWS] for i in range(0, len(items), PREFILL_ROWS)]
        parts = [self._prefill_group(prefix_len, prompts, group, stats) for group in groups]
        return parts[0] if len(parts) == 1 else concat(parts)

    def _prefill_group(self, prefix_len: int, prompts: list[list[int]], items: list[int],
                       stats: EngineStats) -> Rows:
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
        suffix_mask = to_device(suffix_mask, self.device)
        out = self.model(input_ids=to_device(ids, self.device), attention_mask=suffix_mask,
                         position_ids=to_device(positions, self.device), past_key_values=new_cache(), use_cache=True,
                         logits_to_keep=1)
        stats.suffix_tokens += sum(len(s) for s in suffixes)
        stats.prefill_padding += width * len(suffixes) - sum(len(s) for s in suffixes)
        first = self.next_tokens(out.logits[:, -1], items)
        if self.score_token_ids:
            probs = out.logits[:, -1].float().softmax(-1)[:, self.score_token_ids]
            self._first_probs.update(zip(items, read_back(probs, stats)))
        generated = [[] for _ in items]
        if self.step.reads_first_tokens:  # else the step reads them with its next block
            for item, tokens, token in zip(items, generated, read_back(first, stats)):
                self.extend_row(item, tokens, [token])
        positions = to_device(torch.tensor([prefix_len + len(s) for s in suffixes]), self.device)
        return Rows(cache=out.past_key_values, mask=suffix_mask, positions=positions, last=first,
                    items=list(items), generated=generated)

    def extend_row(self, item: int, tokens: list[int], new: list[int]) -> int:
        """Append a row's new tokens up to its stop (recorded for retirement); how many were taken."""
        for taken, token in enumerate(new, 1):
            tokens.append(token)
            outcome = self.stops.stopped(tokens)
            if outcome is not None:
                self._stopped_rows[item] = outcome
                return taken
        return len(new)

    def next_tokens(self, logits: torch.Tensor, items: list[int]) -> torch.Tensor:
        """Each row's next token (left on the device): the argmax, or a draw from the row's own generator."""
        if self.sampling is None:
            return logits.argmax(-1)
        return self.sampling.draw(logits, [self.generators[item] for item in items])

    def _retire_finished(self, rows, results, stats: EngineStats, progress, on_result) -> list[int]:
        """Record the rows that stopped; their slots are returned to be refilled or dropped."""
        free = []
        for row, item in enumerate(rows.items):
            if item is None or item not in self._stopped_rows:
                continue
            outcome = self._stopped_rows.pop(item)
            outcome.first_token_probs = self._first_probs.pop(item, None)
            results[item] = outcome
            if on_result is not None:
                on_result(item, outcome)
            free.append(row)
            stats.generated_tokens += len(rows.generated[row])
            if progress is not None:
                progress.update(1)
                elapsed = max(progress.format_dict["elapsed"], 1e-9)
                progress.set_postfix(tokens_per_s=f"{stats.generated_tokens / elapsed:.1f}")
        return free


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
