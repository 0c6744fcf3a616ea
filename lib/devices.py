"""Which device and number format this process computes in."""

from __future__ import annotations

import datetime as dt
import os

import torch

from lib.errors import InputError
from lib.pipeline.cli import when_stage_ends_well
from lib.pipeline.config import HardwareConfig

# For library callers outside a stage (tests, benchmarks); a stage passes its config's value.
DEFAULT_DISTRIBUTED_TIMEOUT_MINUTES = HardwareConfig.distributed_timeout_minutes
_CPU_ONLY = "GSM8K_TOOLKIT_CPU_ONLY"  # set by `hardware.device: cpu`; read by process_state (and subprocesses)


def resolve_compute_dtype(name: str, device: torch.device | None = None) -> torch.dtype:
    """`auto`: bf16 where the process's device runs it natively, else fp32."""
    if name != "auto":
        return getattr(torch, name)
    device = device or process_state().device
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    cpu_has_bf16 = getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)()
    return torch.bfloat16 if cpu_has_bf16 else torch.float32


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host tensor copied to `device` without the host waiting for the work already queued there.

    On CUDA a copy from ordinary (pageable) memory synchronizes with the stream, so a prompt's ids
    sent while decode steps are queued would idle the GPU until the host issues again; from pinned
    memory the copy is queued like a kernel (PyTorch keeps the pinned block until it is done)."""
    if device.type != "cuda":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


def resolve_eval_dtype(name: str, device: torch.device | None = None) -> torch.dtype:
    """`auto`: bf16 on GPUs that support it; fp32 on the CPU, where batched greedy output then
    equals one-by-one decoding."""
    if name != "auto":
        return getattr(torch, name)
    device = device or process_state().device
    return torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float32


def process_state(timeout_minutes: int = DEFAULT_DISTRIBUTED_TIMEOUT_MINUTES):
    """accelerate's view of this process (rank, count, device: cuda:<local rank> or the CPU).

    The first call in a process creates it, and with it the process group of a multi-process
    launch: `timeout_minutes` is how long a rank waits for the others (NCCL's and gloo's default,
    10-30 minutes, kills a rank that finished its share of a resumed evaluation while another
    still works). Without CUDA, or under `hardware.device: cpu`, it is asked for the CPU
    explicitly, or a `--multi_gpu` launch on a CPU machine would look like one process.
    """
    from accelerate import PartialState

    settings = {"cpu": os.environ.get(_CPU_ONLY) == "1" or not torch.cuda.is_available(),
                "timeout": dt.timedelta(minutes=timeout_minutes)}
    state = PartialState(**settings)
    if state.num_processes == 1 and (state.device.type == "cpu") != settings["cpu"]:
        # One process whose policy changed since its state was made (a test process running stages
        # with different devices): no process group to keep, so the state is made again.
        PartialState._reset_state()
        state = PartialState(**settings)
    return state


def end_process_group() -> None:
    """The end of a launch's stage: every rank waits for the others, then the process group is destroyed.

    Left to the interpreter's exit, the group's threads and sockets are torn down while the other
    ranks may still be writing, or after Python itself is gone: a rank can then abort (SIGABRT) after
    its work is written, and the launch fails a finished stage. This is what Trainer.end and
    accelerate's end_training do for a script, for every stage (not only the Trainer's)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return
    state = process_state()
    state.wait_for_everyone()
    state.destroy_process_group()


CPU_PARAMETER_LIMIT = 1_000_000_000  # above this a model runs on the CPU only when asked (hours per stage)


def check_device(device: str, model: str, stage: str) -> None:
    """The device policy (`hardware.device`) for `model`, checked before a stage loads it (changes nothing).

    cuda: CUDA must be usable. cpu: always allowed. auto: CUDA when usable; otherwise only the
    embedded model and local folders of small models (config below 1B parameters) may run on the
    CPU, so a 4B run never starts there unnoticed."""
    if device == "cpu" or torch.cuda.is_available() or (device == "auto" and _small_enough_for_cpu(model)):
        return
    raise InputError(
        f"{stage}: no usable CUDA device for {model} ({cuda_report()});"
        f" {'hardware.device is cuda' if device == 'cuda' else 'it is too large to run on the CPU unasked'}:"
        " fix the driver or container, or SET=\"hardware.device=cpu\" to run on the CPU anyway")


def select_device(device: str) -> None:
    """Make this process (and its children) compute where `hardware.device` says: cpu hides CUDA from
    it, before anything initialises CUDA; a single process uses one device either way (cuda:0 of the
    visible ones)."""
    os.environ[_CPU_ONLY] = "1" if device == "cpu" else "0"
    if device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""


def use_device(device: str, model: str, stage: str, timeout_minutes: int = DEFAULT_DISTRIBUTED_TIMEOUT_MINUTES):
    """A stage's start on its device (`hardware.device`): the policy checked for `model`, the device
    selected, and this process's state (its process group in a launch, waiting `timeout_minutes` for
    the others) made and returned. The group ends with the stage, when it ends well."""
    check_device(device, model, stage)
    select_device(device)
    state = process_state(timeout_minutes)
    when_stage_ends_well(end_process_group)  # without a process group it does nothing
    return state


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
    from pathlib import Path

    from lib.hub import is_hub_id

    if model.startswith("embedded:"):
        return True
    config_file = Path(model) / "config.json"
    if not config_file.is_file():
        # A hub id is the preset's real model; a local path without a config is the loader's to
        # report, with its own message.
        return not is_hub_id(model)
    config = json.loads(config_file.read_text(encoding="utf-8"))
    config = config.get("text_config", config)
    hidden, layers = config.get("hidden_size", 0), config.get("num_hidden_layers", 0)
    # ~12 h^2 per layer (attention 4 h^2, MLP ~8 h^2) plus the embeddings
    estimate = 12 * layers * hidden * hidden + config.get("vocab_size", 0) * hidden
    return estimate < CPU_PARAMETER_LIMIT  # no sizes given: not a real model, the loader reports it
