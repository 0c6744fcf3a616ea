"""Sampling without host waits: temperature and nucleus (top-p), each row drawn with its own
seeded generator, so a prompt's sample does not depend on which other prompts share its batch."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Sampling:
    """Temperature / nucleus sampling (transformers' order: temperature, then top-p)."""

    temperature: float
    top_p: float = 1.0

    def draw(self, logits: torch.Tensor, generators: list[torch.Generator]) -> torch.Tensor:
        """One token per row of `logits`, row r drawn with `generators[r]` (left on the device)."""
        probs = (logits.float() / self.temperature).softmax(-1)
        if self.top_p < 1.0:
            # Keep the most likely tokens until their mass reaches top_p (the first always stays).
            sorted_probs, order = probs.sort(-1, descending=True)
            outside = sorted_probs.cumsum(-1) - sorted_probs >= self.top_p
            probs = probs.scatter(-1, order, sorted_probs.masked_fill(outside, 0.0))
        return draw(probs, generators)


def draw(probs: torch.Tensor, generators: list[torch.Generator]) -> torch.Tensor:
    """One token per row of `probs`, row r drawn with `generators[r]`, with no read back to the host.

    The exponential race: with independent E_i ~ Exp(1), argmax_i p_i / E_i is i with probability
    p_i / sum(p) (Gumbel-max with -log E as the noise). torch.multinomial gives the same distribution
    but reads two values back per call, so a batch of 64 rows made the host wait 128 times per step.
    Each row's noise comes from its own generator: its sample does not depend on its batch."""
    noise = torch.stack([torch.empty(probs.shape[-1], device=probs.device).exponential_(generator=generator)
                         for generator in generators])
    # An Exp(1) draw of exactly 0 would turn a zero-probability token into 0/0 = NaN, which argmax picks.
    return (probs / noise.clamp_min(torch.finfo(noise.dtype).tiny)).argmax(-1)
