"""Which decode step runs (`hardware.decode`): as asked, or for `auto` the static step where a probe
at the call's own shape shows its CUDA graph gives the dynamic step's tokens.

On CUDA the static step replayed as a CUDA graph is ~3x faster than the dynamic one; eager (any other
device) it issues as many kernels and is not faster, so auto keeps the dynamic step there. The probe:
the call's first `slots` + 1 prompts, cut to one length, through `slots` slots over a cache sized
for the call's new tokens (bitsandbytes and cuBLAS pick other kernels at 64 slots than at 2), 4
greedy tokens each way (all but the first by replays, the last prompt's in a refilled slot); their
tokens must be equal, or part first at a near-tie (lib/engine/near_ties.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from lib.engine.near_ties import NEAR_TIE_ULPS, near_tie
from lib.engine.prefix_sharing import PrefixSharingEngine
from lib.engine.static import StaticStep
from lib.errors import error_line

PROBE_TOKENS = 4


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


class DecodeChooser:
    """auto's choices for one loaded model, owned by its caller: each shape (slots, new tokens) probed
    once, each reason printed once."""

    def __init__(self, model, tokenizer, label: str = ""):
        self.model, self.tokenizer, self.label = model, tokenizer, label
        self.choices: dict[tuple[int, int], DecodeChoice] = {}

    def choose(self, decode: str, prompts=(), attention: str = "auto", slots: int = 2,
               max_new_tokens: int = PROBE_TOKENS) -> DecodeChoice:
        """The decode step to run: as `hardware.decode` says; for auto the static one where its step is
        replayed as a CUDA graph and the probe at the call's shape agrees; elsewhere dynamic."""
        if decode != "auto":
            return DecodeChoice(decode, decode, "as hardware.decode says")
        shape = (min(slots, len(prompts)) if prompts else slots, max_new_tokens)
        if shape not in self.choices:
            choice = self._auto(prompts, attention, *shape)
            if not any(known.why == choice.why for known in self.choices.values()):
                print(f"{self.label}: hardware.decode auto -> {choice.step} ({choice.why})")
            self.choices[shape] = choice
        return self.choices[shape]

    def _auto(self, prompts, attention: str, slots: int, max_new_tokens: int) -> DecodeChoice:
        if next(self.model.parameters()).device.type != "cuda":
            return DecodeChoice("dynamic", "auto", "no CUDA graphs off CUDA, and the eager static step is not faster")
        failure, gap = probe_static(self.model, self.tokenizer, prompts, attention, slots, max_new_tokens)
        if failure:
            return DecodeChoice("dynamic", "auto", f"the CUDA-graph static step failed its probe: {failure}", gap)
        return DecodeChoice("static", "auto", "replayed as a CUDA graph; a probe gave the dynamic step's tokens"
                            + (f" up to near-ties (widest {gap:.1f} ulps)" if gap else ""), gap)


def probe_static(model, tokenizer, prompts, attention: str = "auto", slots: int = 2,
                 max_new_tokens: int = PROBE_TOKENS) -> tuple[str | None, float]:
    """(why the captured static step cannot stand in for the dynamic one here, or None; the widest
    gap in ulps at which their tokens parted, 0.0 where they never did). No EOS stops a row early
    (a judge's one-word verdict would leave no replay to compare), and the prompts are cut to one
    length (no padding); a divergence is judged on a third, one-row forward pass."""
    sample = prompts[:slots + 1]
    shortest = min(len(prompt) for prompt in sample)
    sample = [list(prompt[:shortest]) for prompt in sample]
    options = dict(max_new_tokens=PROBE_TOKENS, batch_size=min(slots, len(sample)), eos_token_ids=(-1,),
                   attention=attention)
    device, dtype = next(model.parameters()).device, next(model.parameters()).dtype
    try:
        step = StaticStep.on(device, capacity_for=max_new_tokens)
        static, _ = PrefixSharingEngine(model, tokenizer, step=step, **options).generate(sample)
    except Exception as error:  # a probe: whatever stops the capture or a replay means the dynamic step
        return error_line(error.__cause__ or error), math.inf
    dynamic, _ = PrefixSharingEngine(model, tokenizer, **options).generate(sample)
    widest = 0.0
    for number, (prompt, ours, theirs) in enumerate(zip(sample, static, dynamic)):
        first = next((j for j, (a, b) in enumerate(zip(ours.token_ids, theirs.token_ids)) if a != b), None)
        if first is None:
            continue
        with torch.inference_mode():
            logits = model(input_ids=torch.tensor([prompt + theirs.token_ids[:first]], device=device)).logits[0, -1]
        tie, gap = near_tie(logits, ours.token_ids[first], theirs.token_ids[first], dtype)
        widest = max(widest, gap)
        if not tie:
            where = f"{gap:.1f} ulps apart" if math.isfinite(gap) else "not the two likeliest"
            return (f"prompt {number}: tokens {ours.token_ids} where the dynamic step gives {theirs.token_ids}"
                    f" (at token {first}: {where}, {NEAR_TIE_ULPS} forgiven)"), widest
    return None, widest
