"""Shared code of the GSM8K QLoRA toolkit; the stage scripts in stages/ call into it."""

import logging
import warnings

# The console shows only lines a user can act on. Two upstream messages are not such lines:
# - bitsandbytes 0.50 (backends/cpu/ops.py), on CPUs with AVX512-BF16, tries to fetch an optional
#   kernel from the hub through the `kernels` package and logs a warning when it cannot; its own
#   CPU kernel is then used, which is what runs here (offline, no `kernels`).
logging.getLogger("bitsandbytes.backends.cpu.ops").addFilter(
    lambda record: "kernels-community" not in record.getMessage())
# - peft 0.21 (prepare_model_for_kbit_training, PeftModel) calls the pre-v5 names
#   `gradient_checkpointing_enable` / `is_gradient_checkpointing`, which transformers 5 deprecates
#   with a FutureWarning on every call. Our own code calls `activation_checkpointing_enable`.
warnings.filterwarnings("ignore", message=r"`(gradient_checkpointing_enable|is_gradient_checkpointing)` is deprecated",
                        category=FutureWarning)
