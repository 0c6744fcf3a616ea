"""The shared-prefix attention function against PyTorch's SDPA over [prefix ; own keys], random tensors."""

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from lib.engine import attention as prefix_attention
from lib.engine.attention import (
    OwnBias,
    SharedPrefix,
    attention_heads,
    prefix_shared_attention,
    probe_fused,
    resolve_kernel,
)


def _reference(query, prefix_keys, prefix_values, keys, values, own_mask, scale):
    """SDPA over the prefix copied into every row, key/value heads repeated for each query group."""
    batch, query_heads, length, _ = query.shape
    groups = query_heads // keys.shape[1]
    full_keys = torch.cat([prefix_keys.expand(batch, -1, -1, -1), keys], dim=2).repeat_interleave(groups, dim=1)
    full_values = torch.cat([prefix_values.expand(batch, -1, -1, -1), values], dim=2).repeat_interleave(groups, dim=1)
    prefix_visible = torch.ones(batch, 1, length, prefix_keys.shape[2], dtype=torch.bool)
    mask = torch.cat([prefix_visible, own_mask], dim=-1)
    return F.scaled_dot_product_attention(query, full_keys, full_values, attn_mask=mask, scale=scale).transpose(1, 2)


@pytest.mark.parametrize("kernel", ["eager", "fused"])
@pytest.mark.parametrize("query_length, last_start", [
    (1, 3),  # a decode step
    (3, 3),  # a prefill of 3 tokens under a causal mask
    (3, 4),  # ... where row 2's first query is padding: no own key, the prefix only
])
def test_prefix_shared_attention_equals_sdpa_over_the_concatenated_keys(query_length, last_start, kernel):
    generator = torch.Generator().manual_seed(0)
    batch, query_heads, kv_heads, dim, prefix_len, own_len = 3, 4, 2, 8, 5, 6

    def rand(*shape):
        return torch.randn(*shape, generator=generator, dtype=torch.float32)

    query, keys, values = rand(batch, query_heads, query_length, dim), rand(batch, kv_heads, own_len, dim), rand(
        batch, kv_heads, own_len, dim)
    prefix_keys, prefix_values = rand(1, kv_heads, prefix_len, dim), rand(1, kv_heads, prefix_len, dim)
    # Rows right-aligned with masked columns on the left (row 0 uses all, row 2 the last 3), causal in the tail.
    starts = torch.tensor([0, 2, last_start])
    columns = torch.arange(own_len)
    query_at = own_len - query_length + torch.arange(query_length)
    own_mask = (columns[None, None, :] >= starts[:, None, None]) & (columns[None, None, :] <= query_at[None, :, None])
    own_mask = own_mask[:, None]  # [batch, 1, q, own]
    module = SimpleNamespace(shared_prefix=SharedPrefix((prefix_keys, prefix_values), kernel, OwnBias()))

    output, _ = prefix_shared_attention(module, query, keys, values, own_mask, scaling=0.3)

    expected = _reference(query, prefix_keys, prefix_values, keys, values, own_mask, 0.3)
    assert output.shape == (batch, query_length, query_heads, dim)
    torch.testing.assert_close(output, expected)  # fp32 tolerances


def test_prefix_shared_attention_without_a_prefix_is_plain_sdpa():
    generator = torch.Generator().manual_seed(1)
    query = torch.randn(2, 4, 1, 8, generator=generator)
    keys, values = torch.randn(2, 2, 5, 8, generator=generator), torch.randn(2, 2, 5, 8, generator=generator)
    mask = torch.ones(2, 1, 1, 5, dtype=torch.bool)
    mask[1, ..., :2] = False
    module = SimpleNamespace(shared_prefix=SharedPrefix(None, "fused", OwnBias()), num_key_value_groups=2,
                             is_causal=False, training=False)

    output, _ = prefix_shared_attention(module, query, keys, values, mask, scaling=None)

    expected = F.scaled_dot_product_attention(query, keys.repeat_interleave(2, 1), values.repeat_interleave(2, 1),
                                              attn_mask=mask).transpose(1, 2)
    torch.testing.assert_close(output, expected)


def test_auto_kernel_is_fused_where_its_probe_passes_and_names_are_checked():
    assert resolve_kernel("auto", torch.device("cpu"), torch.float32) == "fused"
    assert resolve_kernel("eager", torch.device("cpu"), torch.float32) == "eager"
    with pytest.raises(ValueError, match="expected one of auto, eager, fused"):
        resolve_kernel("flash", torch.device("cpu"), torch.float32)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_kernel_probe_passes_where_its_op_exists(dtype):
    assert probe_fused(torch.device("cpu"), dtype) is None
    assert probe_fused(torch.device("cpu"), dtype, (32, 8, 128)) is None  # Qwen3-4B's heads


def test_the_probe_uses_the_models_own_heads():
    from transformers import LlamaConfig, Qwen3Config

    assert attention_heads(Qwen3Config(hidden_size=2560, num_attention_heads=32, num_key_value_heads=8,
                                       head_dim=128)) == (32, 8, 128)  # head_dim is not hidden / heads here
    assert attention_heads(LlamaConfig(hidden_size=576, num_attention_heads=9, num_key_value_heads=3)) == (9, 3, 64)


def test_probe_reports_why_the_fused_kernel_cannot_run(monkeypatch):
    def unavailable(*args, **kwargs):
        raise RuntimeError("no kernel for these inputs")

    monkeypatch.setattr(prefix_attention, "_attention_with_lse", unavailable)
    assert probe_fused(torch.device("cpu"), torch.float32) == "RuntimeError: no kernel for these inputs"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the fallback where CUDA cannot run the probe")
def test_auto_on_a_device_the_probe_cannot_use_falls_back_to_eager_and_says_why(caplog):
    with caplog.at_level("WARNING"):
        assert resolve_kernel("auto", torch.device("cuda"), torch.bfloat16) == "eager"
    assert "fused kernel unavailable on cuda torch.bfloat16" in caplog.text


def test_the_cuda_branch_of_the_fused_kernel_has_the_right_shapes_on_meta_tensors():
    # The meta device runs the CUDA op's shape function (lse padded to 32 queries): no values, no GPU.
    batch, query_heads, kv_heads, length, dim = 3, 8, 2, 5, 64
    query = torch.empty(batch, query_heads, length, dim, device="meta", dtype=torch.bfloat16)
    keys = values = torch.empty(batch, kv_heads, 37, dim, device="meta", dtype=torch.bfloat16)
    prefix = (torch.empty(1, kv_heads, 50, dim, device="meta", dtype=torch.bfloat16),) * 2
    mask = torch.ones(batch, 1, length, 37, dtype=torch.bool, device="meta")
    output = prefix_attention._fused_attention(query, keys, values, mask, prefix, dim ** -0.5)
    assert output.shape == (batch, query_heads, length, dim) and output.dtype == torch.bfloat16


def test_the_bias_made_for_one_mask_is_not_served_for_another():
    # Layers of one step share the mask object (its bias is made once); the next step's mask is new.
    generator = torch.Generator().manual_seed(3)
    query, keys, values = (torch.randn(2, 4, 1, 8, generator=generator), torch.randn(2, 2, 6, 8, generator=generator),
                           torch.randn(2, 2, 6, 8, generator=generator))
    prefix = (torch.randn(1, 2, 3, 8, generator=generator), torch.randn(1, 2, 3, 8, generator=generator))
    first = torch.ones(2, 1, 1, 6, dtype=torch.bool)
    second = first.clone()
    second[0, ..., :4] = False
    module = SimpleNamespace(shared_prefix=SharedPrefix(prefix, "fused", OwnBias()))
    prefix_shared_attention(module, query, keys, values, first, scaling=0.3)
    with_second, _ = prefix_shared_attention(module, query, keys, values, second, scaling=0.3)
    expected = _reference(query, *prefix, keys, values, second, 0.3)
    torch.testing.assert_close(with_second, expected)
