"""What the console shows: each command's --help from its docstring, and no upstream message a user
cannot act on. Plain Python (no third-party import), so any command can use it before its own imports:
the GPU check's does, on a node where the carried packages are not installed yet."""

from __future__ import annotations

import logging
import warnings


def quiet_upstream_messages() -> None:
    """The console shows only lines a user can act on; two upstream messages are not such lines.
    Installed by the stages package (stages/__init__.py) before a command imports anything that
    would print one (bitsandbytes' message comes at its import); importing lib/ changes nothing:
    - bitsandbytes 0.50 (backends/cpu/ops.py), on CPUs with AVX512-BF16, tries to fetch an optional
      kernel from the hub through the `kernels` package and logs a warning when it cannot; its own
      CPU kernel is then used, which is what runs here (offline, no `kernels`).
    - peft 0.21 (prepare_model_for_kbit_training, PeftModel) calls the pre-v5 names
      `gradient_checkpointing_enable` / `is_gradient_checkpointing`, which transformers 5 deprecates
      with a FutureWarning on every call. Our own code calls `activation_checkpointing_enable`."""
    bnb = logging.getLogger("bitsandbytes.backends.cpu.ops")
    if not any(getattr(f, "__name__", "") == "_not_kernels_community" for f in bnb.filters):
        bnb.addFilter(_not_kernels_community)
    warnings.filterwarnings("ignore", message=r"`(gradient_checkpointing_enable|is_gradient_checkpointing)` is"
                            r" deprecated", category=FutureWarning)


def _not_kernels_community(record: logging.LogRecord) -> bool:
    return "kernels-community" not in record.getMessage()


def stage_help(docstring: str) -> str:
    """A stage module's docstring as its --help text: click rewraps paragraphs, so each block of
    indented example commands is marked to be kept as written."""
    paragraphs = docstring.strip().split("\n\n")
    return "\n\n".join("\b\n" + block if block.startswith("    ") else block for block in paragraphs)


def last_line(output: str) -> str:
    """A command's last line of output, what a one-line error quotes of it (`no output` when empty)."""
    return (output.strip().splitlines() or ["no output"])[-1]
