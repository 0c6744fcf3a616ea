"""Plain batched `generate`, for models the prefix-sharing engine does not reproduce.

The engine's attention function (lib/engine/attention.py) computes full softmax attention over the shared
prefix and each row's own tokens. Two attention variants change that computation: a sliding window
that is shorter than a sequence (Mistral, WildGuard; Gemma2's local layers, ShieldGemma) and
soft-capped attention logits (Gemma2). For such a model `choose_generator` (lib/engine/generate.py)
returns this class, which has the engine's interface and gives the answers of one-by-one
`generate` (left-padded batches, greedy), only without the prefix sharing and slot refilling that
make the engine fast.
"""

from __future__ import annotations

import time

import torch

from lib.engine.outputs import EngineStats, Generated, StopRules, eos_ids


def engine_unsupported(model, longest_sequence: int) -> str | None:
    """Why the engine would not reproduce this model's attention, or None when it does."""
    config = model.config
    if getattr(config, "attn_logit_softcapping", None):
        return f"attention logit soft-capping ({config.attn_logit_softcapping})"
    window = getattr(config, "sliding_window", None)
    layer_types = getattr(config, "layer_types", None)
    windowed = window is not None and (layer_types is None or "sliding_attention" in layer_types)
    if windowed and longest_sequence > window:
        return f"sliding-window attention (a window of {window} tokens, sequences up to {longest_sequence})"
    return None


class BatchedGenerate:
    """Greedy `model.generate` over left-padded batches, with the engine's outputs, statistics and
    stop rules (lib/engine/outputs.py) and its interface (`generate`, `attention_kernel`,
    `decode_mode`, `eos`), not its scheduling."""

    decode_mode = "generate"  # transformers' own loop: neither of the engine's decode steps
    decode_choice = None

    def __init__(self, model, tokenizer, max_new_tokens: int, batch_size: int, stop_strings: tuple[str, ...] = (),
                 score_token_ids: tuple[int, ...] = ()):
        self.model, self.tokenizer = model, tokenizer
        self.max_new_tokens, self.batch_size = max_new_tokens, batch_size
        self.stop_strings = tuple(stop_strings)
        self.eos = eos_ids(model, tokenizer)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(self.eos)
        self.device = next(model.parameters()).device
        self.score_token_ids = list(score_token_ids)
        self.stops = StopRules(tokenizer, self.eos, self.stop_strings, max_new_tokens)

    def attention_kernel(self) -> str:
        return f"model's own ({self.model.config._attn_implementation})"

    @torch.inference_mode()
    def generate(self, prompts: list[list[int]], progress=None, seeds=None, in_order: bool = False,
                 on_result=None) -> tuple[list[Generated], EngineStats]:
        """In input order always (batches of batch_size prompts); on_result(index, Generated) as each batch ends."""
        assert seeds is None, "choose_generator never samples with plain generate"
        stats = EngineStats(prompts=len(prompts))
        start = time.perf_counter()
        results = []
        for first in range(0, len(prompts), self.batch_size):
            batch = prompts[first:first + self.batch_size]
            width = max(map(len, batch))
            ids = torch.tensor([[self.pad_id] * (width - len(p)) + p for p in batch], device=self.device)
            mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in batch], device=self.device)
            out = self.model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=self.max_new_tokens,
                                      do_sample=False, eos_token_id=sorted(self.eos), pad_token_id=self.pad_id,
                                      stop_strings=list(self.stop_strings) or None, tokenizer=self.tokenizer,
                                      output_scores=bool(self.score_token_ids), return_dict_in_generate=True)
            stats.suffix_tokens += sum(map(len, batch))
            stats.prefill_padding += width * len(batch) - sum(map(len, batch))
            for row, sequence in enumerate(out.sequences[:, width:].tolist()):
                tokens = _until_stop(sequence, self.eos)
                # A row that a stop string ended is padded after it, and the pad may be an EOS id.
                body = tokens[:-1] if tokens and tokens[-1] in self.eos else tokens
                text = self.tokenizer.decode(body, skip_special_tokens=True)
                if any(stop in text for stop in self.stop_strings):
                    result = self.stops.result(body, "stop_string")
                else:
                    result = self.stops.stopped(tokens) or self.stops.result(tokens, "max_new_tokens")
                if self.score_token_ids:
                    probs = out.scores[0][row].float().softmax(-1)[self.score_token_ids]
                    result.first_token_probs = probs.tolist()
                stats.generated_tokens += len(tokens)
                stats.decode_positions += len(tokens)
                results.append(result)
                if on_result is not None:
                    on_result(len(results) - 1, result)
                if progress is not None:
                    progress.update(1)
        stats.seconds = time.perf_counter() - start
        return results, stats


def _until_stop(sequence: list[int], eos: set[int]) -> list[int]:
    """The generated tokens up to and including the first end-of-sequence (the padding after it dropped)."""
    for index, token in enumerate(sequence):
        if token in eos:
            return sequence[:index + 1]
    return sequence

