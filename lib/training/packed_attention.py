"""Attention for padding-free batches without a tokens x tokens mask (`train.packing: padding_free`).

transformers' DataCollatorWithFlattening puts a batch's examples back to back in one row, position
ids restarting at 0 per example, and (with `return_flash_attn_kwargs`, lib/training/loss.py) the
examples' cumulative starts `cu_seq_lens_q` and the longest `max_length_q`, which the model hands
to its attention function. With SDPA, transformers instead materialises a block-diagonal causal
mask over the whole row ([tokens, tokens]: ~1,900 x 1,900 at the simple preset's 8 x ~240 tokens),
and the kernel computes every block of it, ~8x the attention of the examples alone. Here each
example attends to itself only:
- "flash_attention_2" where the flash-attn package is installed on CUDA (transformers' own
  integration reads the same starts);
- everywhere else `packed_varlen` (this module, registered with transformers' AttentionInterface
  and with no mask function, so transformers builds no mask): PyTorch's variable-length flash
  kernel (`torch.nn.attention.varlen.varlen_attn`) on CUDA where the version has it (2.10 and
  later), otherwise one causal SDPA call per example, the CPU's path (faster there than the masked
  row: docs/benchmarks.md, "Packed attention").
"""

from __future__ import annotations

import importlib.util
import inspect

import torch

PACKED_ATTENTION = "packed_varlen"


def packed_attention_for(device: torch.device) -> str:
    """The attention implementation padding-free training runs with on `device`."""
    if device.type == "cuda" and importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    register_packed_attention()
    return PACKED_ATTENTION


def set_training_attention(model, packing: str, device: torch.device) -> str:
    """The attention the train stage runs `model` with, set on it and returned: packed rows
    (`padding_free`) attend within each example with no row-wide mask; padded rows keep what
    transformers chose for the model."""
    if packing != "padding_free":
        return model.config._attn_implementation
    attention = packed_attention_for(device)
    model.set_attn_implementation(attention)
    return attention


def packed_kernel(device: torch.device, dtype: torch.dtype) -> str:
    """What computes packed rows' attention on `device` when training computes in `dtype` (q, k and v
    arrive in it, see `in_autocast_dtype`): for the logs and the benchmark's line."""
    if packed_attention_for(device) == "flash_attention_2":
        return "flash-attn's varlen kernel"
    probe = torch.empty(1, 1, 1, 8, dtype=dtype, device=device)
    return "torch's varlen_attn" if _varlen_kernel(probe, 0.0) is not None else "one SDPA call per example"


def register_packed_attention() -> None:
    """Make `packed_varlen` an attention implementation transformers knows. It registers no mask
    function, so transformers passes no mask (its mask preprocessing exits early for such names)."""
    from transformers import AttentionInterface

    AttentionInterface.register(PACKED_ATTENTION, packed_attention)


def packed_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, sliding_window=None,
                     cu_seq_lens_q=None, max_length_q=None, **kwargs):
    """Causal attention within each example of one packed row. query [1, Hq, T, D], key/value
    [1, Hkv, T, D]; `cu_seq_lens_q` the examples' cumulative starts [examples + 1] (int32) and
    `max_length_q` the longest, from the padding-free collator; returns [1, T, Hq, D] as
    transformers' attention functions do."""
    if sliding_window is not None:
        raise ValueError(f"{PACKED_ATTENTION} attention: sliding-window layers are not supported")
    if cu_seq_lens_q is None or query.shape[0] != 1:
        raise ValueError(f"{PACKED_ATTENTION} attention needs one packed row and its examples' starts"
                         " (train.packing: padding_free, whose collator gives cu_seq_lens_q)")
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    query, key, value = in_autocast_dtype(query, key, value)
    if _varlen_kernel(query, dropout) is not None:
        return _varlen(query, key, value, cu_seq_lens_q.to(query.device), max_length_q, scale)[None], None
    starts = cu_seq_lens_q.tolist()  # the fallback slices on the host (the CPU's path: no wait to hide)
    groups = query.shape[1] // key.shape[1]
    outputs = [torch.nn.functional.scaled_dot_product_attention(
        query[:, :, start:end], key[:, :, start:end], value[:, :, start:end], is_causal=True, scale=scale,
        dropout_p=dropout, enable_gqa=groups > 1) for start, end in zip(starts, starts[1:])]
    return torch.cat(outputs, dim=2).transpose(1, 2), None


def in_autocast_dtype(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The tensors in the dtype autocast computes in on their device, where it is on (else as they are).
    QLoRA's q, k and v arrive in fp32 under bf16 autocast: peft's `prepare_model_for_kbit_training`
    keeps the norms in fp32 and bitsandbytes' Linear4bit returns its input's dtype. SDPA is on
    autocast's list and casts them itself; the varlen kernel is not, and refuses fp32."""
    device = tensors[0].device.type
    if not torch.is_autocast_enabled(device):
        return tensors
    dtype = torch.get_autocast_dtype(device)
    return tuple(tensor.to(dtype) for tensor in tensors)


def _varlen_kernel(query: torch.Tensor, dropout: float):
    """PyTorch's variable-length flash attention where it can run this call: CUDA, half precision,
    no dropout, and a PyTorch that has it (2.10 and later); else None."""
    if query.device.type != "cuda" or query.dtype not in (torch.float16, torch.bfloat16) or dropout:
        return None
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None
    return varlen_attn


def _varlen(query, key, value, cumulative, longest: int, scale: float) -> torch.Tensor:
    """[T, Hq, D] from the variable-length kernel, causal within each example. Its keywords changed
    between PyTorch versions (`is_causal`, later a `window_size`; GQA by `enable_gqa`), so the call
    is built from its signature."""
    kernel = _varlen_kernel(query, 0.0)
    accepts = inspect.signature(kernel).parameters
    # [T, H, D], contiguous as the flash kernels read them
    queries, keys, values = (tensor[0].transpose(0, 1).contiguous() for tensor in (query, key, value))
    options = {"scale": scale}
    if "window_size" in accepts:
        options["window_size"] = (-1, 0)  # causal
    else:
        options["is_causal"] = True
    groups = queries.shape[1] // keys.shape[1]
    if groups > 1 and "enable_gqa" in accepts:
        options["enable_gqa"] = True
    elif groups > 1:
        keys, values = keys.repeat_interleave(groups, dim=1), values.repeat_interleave(groups, dim=1)
    return kernel(queries, keys, values, cumulative, cumulative, longest, longest, **options)
