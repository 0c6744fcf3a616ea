"""Which device and number format this process computes in."""

from __future__ import annotations

import torch


def resolve_compute_dtype(name: str) -> torch.dtype:
    """`auto`: bf16 where the device runs it natively, else fp32."""
    if name != "auto":
        return getattr(torch, name)
    if torch.cuda.is_available():
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    cpu_has_bf16 = getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)()
    return torch.bfloat16 if cpu_has_bf16 else torch.float32


def process_state():
    """accelerate's view of this process (rank, count, device: cuda:<local rank> or the CPU).

    Without CUDA it must be asked for the CPU explicitly, or a `--multi_gpu` launch on a CPU
    machine would look like one process until the Trainer sets up gloo.
    """
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


def resolve_eval_dtype(name: str) -> torch.dtype:
    """`auto`: bf16 on GPUs that support it; fp32 on the CPU, where batched greedy output then
    equals one-by-one decoding."""
    if name != "auto":
        return getattr(torch, name)
    return torch.bfloat16 if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else torch.float32
