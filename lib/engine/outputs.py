"""What a generator returns, and when a sequence ends: shared by the prefix-sharing engine and
plain batched `generate` (lib/engine/plain_generate.py), which return the same results."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import torch


@dataclass
class Generated:
    token_ids: list[int]  # generated ids, the stopping EOS excluded
    text: str
    stop_reason: str  # "eos", "stop_string" or "max_new_tokens"
    first_token_probs: list[float] | None = None  # P(each of `score_token_ids`) at the first step


class Generator(Protocol):
    """What any generator offers (the prefix-sharing engine, plain batched `generate`; lm-eval's
    `LM.generate_until` is the anchor): continuations of token-id prompts with their statistics, and
    what the records say of it."""

    eos: set[int]  # the ids that end a sequence
    decode_mode: str  # the decode step that runs: dynamic, static, static-cuda-graph or generate

    def attention_kernel(self) -> str:
        """The attention that runs, for the records."""

    def generate(self, prompts: list[list[int]], progress=None, seeds: list[int] | None = None,
                 in_order: bool = False, on_result: Callable[[int, Generated], None] | None = None,
                 ) -> tuple[list[Generated], EngineStats]:
        """Continuations in input order (greedy, or sampled with one seed per prompt), and the call's statistics."""


@dataclass
class EngineStats:
    prompts: int = 0
    prefix_tokens: int = 0  # computed once for all prompts
    suffix_tokens: int = 0  # real prompt tokens prefilled after the prefix
    prefill_padding: int = 0  # padded positions computed in batched prefills
    decode_positions: int = 0  # positions computed by decode steps
    decode_wasted: int = 0  # decode positions computed after their row had stopped (within a block)
    refills: int = 0  # prefills of newcomers into free slots after the first (the static engine counts them)
    # The static engine's steps: K/V columns read through their windows, and the columns in use
    # (the oldest live row's first column to the one written), summed over steps; left shifts.
    kv_columns_read: int = 0
    kv_columns_in_use: int = 0
    shifts: int = 0
    host_reads: int = 0  # device-to-host reads of tokens (each one makes the host wait for the device)
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


def read_back(tokens: torch.Tensor, stats: EngineStats) -> list:
    """Tokens as Python lists: the engines' one way of reading the device, counted."""
    stats.host_reads += 1
    return tokens.tolist()


class StopRules:
    """When a sequence ends (an end-of-sequence id, a stop string, max_new_tokens) and its result."""

    def __init__(self, tokenizer, eos: set[int], stop_strings: tuple[str, ...], max_new_tokens: int):
        self.tokenizer = tokenizer
        self.eos = eos
        self.stop_strings = tuple(stop_strings)
        self.max_new_tokens = max_new_tokens
        # Enough tokens to see any stop string in decoded text (a token is at least one char).
        self.stop_window = max((len(s) for s in self.stop_strings), default=0) + 4

    def stopped(self, tokens: list[int]) -> Generated | None:
        if tokens[-1] in self.eos:
            return self.result(tokens[:-1], "eos")
        if self.stop_strings:
            tail = self.tokenizer.decode(tokens[-self.stop_window:], skip_special_tokens=True)
            if any(stop in tail for stop in self.stop_strings):
                return self.result(tokens, "stop_string")
        if len(tokens) >= self.max_new_tokens:
            return self.result(tokens, "max_new_tokens")
        return None

    def result(self, tokens: list[int], reason: str) -> Generated:
        text = self.tokenizer.decode(tokens, skip_special_tokens=True)
        if reason == "stop_string":
            # Cut at the first stop string; the tokens keep what was generated.
            text = text[: min(text.find(s) for s in self.stop_strings if s in text)]
        return Generated(tokens, text, reason)


def eos_ids(model, tokenizer) -> set[int]:
    configured = model.generation_config.eos_token_id
    ids = set(configured if isinstance(configured, list) else [configured] if configured is not None else [])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids
