"""Softmax attention to a shared prefix kept once, plus each row's own cache.

The model runs with the attention function `prefix_shared` (registered through transformers'
AttentionInterface): each query attends to the shared prefix (per-layer keys/values of batch 1)
and to its row's own cached tokens under one softmax. Reading the prefix once per step instead of
once per row is what makes wide batches cheap.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

ATTENTION_NAME = "prefix_shared"


@contextmanager
def shared_prefix(model, prefix_kv):
    """Run `model` with attention to `prefix_kv` (per-layer keys/values of batch 1) in front of
    every row's own cache; restores the model's attention implementation afterwards."""
    _register_attention()
    modules = [m for m in model.modules() if hasattr(m, "layer_idx") and hasattr(m, "k_proj")]
    previous = model.config._attn_implementation
    model.set_attn_implementation(ATTENTION_NAME)
    for module in modules:
        module.shared_prefix_kv = prefix_kv[module.layer_idx] if prefix_kv else None
    try:
        yield
    finally:
        for module in modules:
            module.shared_prefix_kv = None
        model.set_attn_implementation(previous)


def _register_attention() -> None:
    from transformers import AttentionInterface, AttentionMaskInterface
    from transformers.masking_utils import sdpa_mask

    def explicit_mask(*args, **kwargs):
        # Always a boolean mask (True = attend); never "None, use is_causal".
        kwargs["allow_is_causal_skip"] = False
        return sdpa_mask(*args, **kwargs)

    AttentionInterface.register(ATTENTION_NAME, prefix_shared_attention)
    AttentionMaskInterface.register(ATTENTION_NAME, explicit_mask)


def prefix_shared_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """Softmax attention over [shared prefix ; the row's own keys], the prefix read once for all rows.

    query [B, Hq, q, D]; key/value [B, Hkv, S, D] (the rows' own cache); attention_mask a boolean
    [B, 1, q, S] over the own part (the prefix is visible to every query).
    """
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    prefix = getattr(module, "shared_prefix_kv", None)
    if prefix is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout,
                                      **kwargs)
    prefix_keys, prefix_values = prefix
    batch, query_heads, length, dim = query.shape
    kv_heads = key.shape[1]
    groups = query_heads // kv_heads
    scale = scaling if scaling is not None else dim ** -0.5
    # Query heads h*groups .. h*groups+groups-1 share key/value head h (as repeat_kv orders them).
    grouped = query.reshape(batch, kv_heads, groups * length, dim)
    # Against the prefix, all rows' queries of a head form one matrix: one product per head,
    # the prefix read once (broadcasting over the batch would copy it for every row).
    # Scores in fp32 (from bf16 inputs too): rounding them to bf16 before the softmax would move
    # the weights by up to ~0.4% of a logit's scale, enough to flip near-ties against `generate`.
    rows_by_head = grouped.transpose(0, 1).reshape(kv_heads, batch * groups * length, dim).float()
    prefix_scores = torch.bmm(rows_by_head, prefix_keys[0].transpose(-1, -2).float()) * scale
    prefix_scores = prefix_scores.reshape(kv_heads, batch, groups * length, -1).transpose(0, 1)
    own_scores = torch.matmul(grouped.float(), key.transpose(-1, -2).float()) * scale
    if attention_mask is not None:
        allowed = attention_mask[:, :, None].expand(batch, 1, groups, length, key.shape[2])
        own_scores = own_scores.masked_fill(~allowed.reshape(batch, 1, groups * length, key.shape[2]), float("-inf"))
    weights = torch.cat([prefix_scores, own_scores], dim=-1).softmax(dim=-1).to(query.dtype)
    split = prefix_keys.shape[2]
    prefix_weights = weights[..., :split].transpose(0, 1).reshape(kv_heads, batch * groups * length, split)
    from_prefix = torch.bmm(prefix_weights, prefix_values[0]).reshape(kv_heads, batch, groups * length, dim)
    output = from_prefix.transpose(0, 1) + torch.matmul(weights[..., split:], value)
    return output.reshape(batch, query_heads, length, dim).transpose(1, 2).contiguous(), None
