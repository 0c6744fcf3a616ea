"""Softmax attention to a shared prefix kept once, plus each row's own cache.

The model runs with the attention function `prefix_shared` (registered through transformers'
AttentionInterface): each query attends to the shared prefix (per-layer keys/values of batch 1)
and to its row's own cached tokens under one softmax. Reading the prefix once per step instead of
once per row is what makes wide batches cheap.

Two kernels compute the same thing:
- "eager": scores in fp32 by matmul, one softmax over [prefix ; own], weights times values;
- "fused": two fused attention calls, all rows' queries against the prefix as one sequence and each
  row against its own keys, merged with their log-sum-exps (softmax over a union of key sets).
  PyTorch's public `scaled_dot_product_attention` does not return the log-sum-exp, so this calls
  the ATen op behind it (memory-efficient attention on CUDA, the flash kernel on CPU). "auto" uses
  it wherever a probe at the model's head shape runs and agrees with the eager kernel (on the CPU
  too: same tokens as eager on 64/64 real GSM8K questions, ~6-9% faster), else the eager one.
One call over [prefix ; own keys] would need the prefix copied into every row (a view cannot join
two tensors along the key axis): that is plain `generate`'s layout, the baseline the benchmarks use.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from lib.errors import error_line

ATTENTION_NAME = "prefix_shared"
KERNELS = ("auto", "eager", "fused")
# Where the fused kernel calls memory-efficient attention (meta: the CUDA op's shapes, checkable
# without a GPU); elsewhere the CPU flash kernel.
EFFICIENT_OP_DEVICES = ("cuda", "meta")

log = logging.getLogger(__name__)


@dataclass
class SharedPrefix:
    """What one layer's attention reads during a call: the prefix's keys and values (batch 1; None
    without a common prefix), the kernel, and the call's bias cache (shared by its layers)."""

    keys_values: tuple[torch.Tensor, torch.Tensor] | None
    kernel: str
    biases: OwnBias


@contextmanager
def shared_prefix(model, prefix_kv, kernel: str):
    """Run `model` with attention to `prefix_kv` (per-layer keys/values of batch 1) in front of
    every row's own cache, with `kernel` ("eager" or "fused", see resolve_kernel); restores the
    model's attention implementation afterwards. The call's state lives in one SharedPrefix per layer."""
    biases = OwnBias()
    _register_attention(biases)
    modules = [m for m in model.modules() if hasattr(m, "layer_idx") and hasattr(m, "k_proj")]
    previous = model.config._attn_implementation
    model.set_attn_implementation(ATTENTION_NAME)
    for module in modules:
        module.shared_prefix = SharedPrefix(prefix_kv[module.layer_idx] if prefix_kv else None, kernel, biases)
    try:
        yield
    finally:
        for module in modules:
            del module.shared_prefix
        model.set_attn_implementation(previous)


PROBE_HEADS = (4, 2, 64)


def attention_heads(config) -> tuple[int, int, int]:
    """(query heads, key/value heads, head dim) of a decoder config."""
    query_heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // query_heads
    return query_heads, getattr(config, "num_key_value_heads", None) or query_heads, head_dim


def model_kernel(model, kernel: str) -> str:
    """The kernel `model` runs with for this choice: resolve_kernel at its device, dtype and heads."""
    parameter = next(model.parameters())
    return resolve_kernel(kernel, parameter.device, parameter.dtype, attention_heads(model.config))


def resolve_kernel(kernel: str, device: torch.device, dtype: torch.dtype,
                   heads: tuple[int, int, int] = PROBE_HEADS) -> str:
    """The kernel to run: an explicit choice as given; "auto" = fused if its probe passes on this
    device (at the model's head counts and head dim, which decide which kernels the op can use). The
    probe is milliseconds; an engine resolves its kernel once."""
    if kernel not in KERNELS:
        raise ValueError(f"attention kernel {kernel!r}: expected one of {', '.join(KERNELS)}")
    if kernel != "auto":
        return kernel
    failure = probe_fused(device, dtype, heads)
    if failure is not None:
        log.warning("shared-prefix attention: fused kernel unavailable on %s %s (%s); using the eager one",
                    device.type, dtype, failure)
    return "eager" if failure else "fused"


def probe_fused(device: torch.device, dtype: torch.dtype, heads: tuple[int, int, int] = PROBE_HEADS) -> str | None:
    """Run both kernels on a small random case with these heads (left-masked rows, a fully masked
    query); None when the fused one runs and agrees, else why not."""
    generator = torch.Generator().manual_seed(0)

    def rand(*shape):
        return torch.randn(*shape, generator=generator).to(device=device, dtype=dtype)

    (query_heads, kv_heads, dim), batch, length, prefix_len, own_len = heads, 3, 2, 37, 21
    try:
        query, keys, values = rand(batch, query_heads, length, dim), rand(batch, kv_heads, own_len, dim), rand(
            batch, kv_heads, own_len, dim)
        prefix = (rand(1, kv_heads, prefix_len, dim), rand(1, kv_heads, prefix_len, dim))
        mask = torch.ones(batch, 1, length, own_len, dtype=torch.bool, device=device)
        mask[1, ..., :5] = False
        mask[2, :, 0] = False  # a padded query position: no own key at all
        fused = _fused_attention(query, keys, values, mask, prefix, dim ** -0.5)
    except Exception as error:  # a probe: whatever stops the fused op (missing, unsupported shape) means eager
        return error_line(error)
    eager = _eager_attention(query, keys, values, mask, prefix, dim ** -0.5)
    tolerance = 1e-4 if dtype == torch.float32 else 2e-2
    worst = float((fused.float() - eager.float()).abs().max())
    return None if worst <= tolerance else f"differs from the eager kernel by {worst:.3g}"


def _register_attention(biases: OwnBias) -> None:
    from transformers import AttentionInterface, AttentionMaskInterface
    from transformers.masking_utils import sdpa_mask

    def explicit_mask(*args, **kwargs):
        # Always a boolean mask (True = attend); never "None, use is_causal".
        kwargs["allow_is_causal_skip"] = False
        # A new forward pass: the last one's bias goes (and a traced step depends on none of it).
        biases.clear()
        return sdpa_mask(*args, **kwargs)

    AttentionInterface.register(ATTENTION_NAME, prefix_shared_attention)
    AttentionMaskInterface.register(ATTENTION_NAME, explicit_mask)


def prefix_shared_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """Softmax attention over [shared prefix ; the row's own keys], the prefix read once for all rows.

    query [B, Hq, q, D]; key/value [B, Hkv, S, D] (the rows' own cache); attention_mask a boolean
    [B, 1, q, S] over the own part (the prefix is visible to every query).
    """
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    shared = getattr(module, "shared_prefix", None)
    if shared is None or shared.keys_values is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout,
                                      **kwargs)
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    if shared.kernel == "fused":
        output = _fused_attention(query, key, value, attention_mask, shared.keys_values, scale, shared.biases)
    else:
        output = _eager_attention(query, key, value, attention_mask, shared.keys_values, scale)
    return output.transpose(1, 2).contiguous(), None


def _grouped(query: torch.Tensor, kv_heads: int) -> torch.Tensor:
    """[B, Hq, q, D] -> [B, Hkv, groups*q, D]: query heads h*groups .. h*groups+groups-1 share
    key/value head h (as repeat_kv orders them)."""
    batch, query_heads, length, dim = query.shape
    return query.reshape(batch, kv_heads, query_heads // kv_heads * length, dim)


def _grouped_mask(attention_mask: torch.Tensor, groups: int) -> torch.Tensor:
    """[B, 1, q, S] -> [B, 1, groups*q, S], matching _grouped's order."""
    batch, _, length, columns = attention_mask.shape
    expanded = attention_mask[:, :, None].expand(batch, 1, groups, length, columns)
    return expanded.reshape(batch, 1, groups * length, columns)


def _stacked(grouped: torch.Tensor) -> torch.Tensor:
    """[B, Hkv, M, D] -> [Hkv, B*M, D]: against the prefix, all rows' queries of a head form one
    matrix, so the prefix is read once (broadcasting over the batch would copy it for every row)."""
    batch, kv_heads, rows, dim = grouped.shape
    return grouped.transpose(0, 1).reshape(kv_heads, batch * rows, dim)


def _unstacked(stacked: torch.Tensor, batch: int) -> torch.Tensor:
    """Inverse of _stacked for [Hkv, B*M, ...]."""
    kv_heads, rows = stacked.shape[:2]
    return stacked.reshape(kv_heads, batch, rows // batch, *stacked.shape[2:]).transpose(0, 1)


def _eager_attention(query, key, value, attention_mask, prefix, scale) -> torch.Tensor:
    """[B, Hq, q, D] by matmul and one softmax over [prefix ; own]."""
    prefix_keys, prefix_values = prefix
    batch, query_heads, length, dim = query.shape
    kv_heads = key.shape[1]
    grouped = _grouped(query, kv_heads)
    # Scores in fp32 (from bf16 inputs too): rounding them to bf16 before the softmax would move
    # the weights by up to ~0.4% of a logit's scale, enough to flip near-ties against `generate`.
    prefix_scores = _unstacked(torch.bmm(_stacked(grouped).float(), prefix_keys[0].transpose(-1, -2).float()) * scale,
                               batch)
    own_scores = torch.matmul(grouped.float(), key.transpose(-1, -2).float()) * scale
    if attention_mask is not None:
        own_scores = own_scores.masked_fill(~_grouped_mask(attention_mask, query_heads // kv_heads), float("-inf"))
    weights = torch.cat([prefix_scores, own_scores], dim=-1).softmax(dim=-1).to(query.dtype)
    split = prefix_keys.shape[2]
    from_prefix = _unstacked(torch.bmm(_stacked(weights[..., :split]), prefix_values[0]), batch)
    output = from_prefix + torch.matmul(weights[..., split:], value)
    return output.reshape(batch, query_heads, length, dim)


def _fused_attention(query, key, value, attention_mask, prefix, scale, biases: OwnBias | None = None) -> torch.Tensor:
    """[B, Hq, q, D] from two fused attention calls merged by their log-sum-exps, in fp32."""
    prefix_keys, prefix_values = prefix
    batch, query_heads, length, dim = query.shape
    kv_heads = key.shape[1]
    grouped = _grouped(query, kv_heads)
    from_prefix, prefix_lse = _attention_with_lse(_stacked(grouped)[None], prefix_keys, prefix_values, None, scale)
    from_prefix, prefix_lse = _unstacked(from_prefix[0], batch), _unstacked(prefix_lse[0], batch)
    bias, has_keys = None, None
    if attention_mask is not None:
        bias, has_keys = (biases or OwnBias()).of(attention_mask, query_heads // kv_heads, kv_heads, query.dtype)
    from_own, own_lse = _attention_with_lse(grouped, key, value, bias, scale)
    if has_keys is not None:  # the kernels report such a row with lse 0: it must weigh nothing
        own_lse = own_lse.masked_fill(~has_keys, float("-inf"))
    top = torch.maximum(prefix_lse, own_lse)
    prefix_weight, own_weight = (prefix_lse - top).exp()[..., None], (own_lse - top).exp()[..., None]
    merged = (from_prefix.float() * prefix_weight + from_own.float().nan_to_num() * own_weight) / (
        prefix_weight + own_weight)
    return merged.to(query.dtype).reshape(batch, query_heads, length, dim)


class OwnBias:
    """The additive bias the fused kernel takes for the rows' own keys, made once per forward pass:
    every layer gets the same mask object, so the first layer makes it and the others reuse it. One
    per call (SharedPrefix.biases); cleared at each new mask, so a traced step depends on none of it."""

    def __init__(self):
        self._made_from, self._made = None, None  # the mask it was made from, (shape key, bias, has_keys)

    def clear(self) -> None:
        self._made_from, self._made = None, None

    def of(self, attention_mask: torch.Tensor, groups: int, kv_heads: int, dtype: torch.dtype):
        """(additive bias [B, Hkv, groups*q, S] as the device's op takes it, has_keys [B, 1, groups*q])
        from a boolean [B, 1, q, S] mask; has_keys is False where a padded query sees no own key."""
        key = (groups, kv_heads, dtype)
        if self._made_from is attention_mask and self._made[0] == key:
            return self._made[1], self._made[2]
        allowed = _grouped_mask(attention_mask, groups)
        bias = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(~allowed, float("-inf"))
        bias = bias.expand(bias.shape[0], kv_heads, *bias.shape[2:])
        if bias.device.type in EFFICIENT_OP_DEVICES:
            bias = _aligned_bias(bias)
        has_keys = allowed.any(-1)
        self._made_from, self._made = attention_mask, (key, bias, has_keys)
        return bias, has_keys


def _attention_with_lse(query, key, value, bias, scale) -> tuple[torch.Tensor, torch.Tensor]:
    """(softmax(q k^T * scale + bias) v, log-sum-exp of the scores in fp32) for [N, H, M, D] inputs;
    bias additive [N, H, M, S] (from _own_bias) or None."""
    if query.device.type in EFFICIENT_OP_DEVICES:
        output, lse = torch.ops.aten._scaled_dot_product_efficient_attention(query, key, value, bias, True,
                                                                             scale=scale)[:2]
        return output, lse[..., : query.shape[2]]  # the kernel pads lse's query axis
    return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(query, key, value, attn_mask=bias, scale=scale)


def _aligned_bias(bias: torch.Tensor) -> torch.Tensor:
    """The memory-efficient kernel reads the bias in rows aligned to 16 elements (what the public
    SDPA arranges before calling it): the same values in a buffer whose rows are padded."""
    columns = bias.shape[-1]
    padded = bias.new_zeros(*bias.shape[:-1], -(-columns // 16) * 16)
    padded[..., :columns] = bias
    return padded[..., :columns]
