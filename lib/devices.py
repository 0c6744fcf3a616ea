"""Which device and number format this process computes in."""

from __future__ import annotations

import torch

from lib.errors import InputError


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


CPU_PARAMETER_LIMIT = 1_000_000_000  # above this a model runs on the CPU only when asked (hours per stage)


def require_device(device: str, model: str, stage: str) -> None:
    """The device policy (`hardware.device`), checked before a stage loads `model`.

    cuda: CUDA must be usable. cpu: computation stays on the CPU (CUDA hidden from this process).
    auto: CUDA when usable; otherwise only the embedded model and local folders of small models
    (config below 1B parameters) may run on the CPU, so a 4B run never starts there unnoticed.
    """
    import os

    if device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # before anything initialises CUDA in this process
        return
    if torch.cuda.is_available():
        return
    if device == "auto" and _small_enough_for_cpu(model):
        return
    raise InputError(
        f"{stage}: no usable CUDA device for {model} ({cuda_report()});"
        f" {'hardware.device is cuda' if device == 'cuda' else 'it is too large to run on the CPU unasked'}:"
        " fix the driver or container, or SET=\"hardware.device=cpu\" to run on the CPU anyway")


def cuda_report() -> str:
    """What torch and the machine say about CUDA, for the one-line error."""
    import shutil
    import subprocess

    driver = "no nvidia-smi on PATH"
    if shutil.which("nvidia-smi"):
        query = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                               capture_output=True, text=True, timeout=20)
        driver = f"driver {query.stdout.strip() or 'unknown'}" if query.returncode == 0 else "nvidia-smi failed"
    return (f"torch.cuda.is_available() is False; torch {torch.__version__} built for CUDA"
            f" {torch.version.cuda or 'none (a CPU build)'}; {driver}")


def _small_enough_for_cpu(model: str) -> bool:
    import json
    import re
    from pathlib import Path

    if model.startswith("embedded:"):
        return True
    config_file = Path(model) / "config.json"
    if not config_file.is_file():
        # A hub id (owner/name, not on disk) is the preset's real model; a local path without a
        # config is the loader's to report, with its own message.
        hub_id = re.fullmatch(r"[\w-][\w.-]*/[\w.-]+", model) and not Path(model.split("/")[0]).is_dir()
        return not hub_id
    config = json.loads(config_file.read_text(encoding="utf-8"))
    config = config.get("text_config", config)
    hidden, layers = config.get("hidden_size", 0), config.get("num_hidden_layers", 0)
    # ~12 h^2 per layer (attention 4 h^2, MLP ~8 h^2) plus the embeddings
    estimate = 12 * layers * hidden * hidden + config.get("vocab_size", 0) * hidden
    return estimate < CPU_PARAMETER_LIMIT  # no sizes given: not a real model, the loader reports it
