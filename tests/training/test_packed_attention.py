"""Packed rows' attention (lib/training/packed_attention.py): each example attends to itself, and
transformers builds no tokens x tokens mask for it. Its loss and gradients against the padded batch
are checked with the other packing modes in tests/training/test_trainer.py; the CUDA kernel in
tests/test_gpu.py."""

import pytest
import torch

from lib.training.packed_attention import PACKED_ATTENTION, example_spans, register_packed_attention
from tests.helpers import tiny_random_qwen3


def test_transformers_builds_a_row_wide_mask_for_sdpa_and_none_for_packed_rows(smollm2_tokenizer):
    from transformers.masking_utils import create_causal_mask

    register_packed_attention()
    config = tiny_random_qwen3(smollm2_tokenizer).config
    positions = torch.cat([torch.arange(n) for n in (5, 3, 4)])[None]
    embeds = torch.zeros(1, 12, config.hidden_size)
    masks = {}
    for implementation in ("sdpa", PACKED_ATTENTION):
        config._attn_implementation = implementation
        masks[implementation] = create_causal_mask(config=config, inputs_embeds=embeds, attention_mask=None,
                                                   past_key_values=None, position_ids=positions)
    assert masks[PACKED_ATTENTION] is None
    sdpa = masks["sdpa"]
    assert sdpa.shape[-2:] == (12, 12) and not bool(sdpa[0, 0, 5, 4]) and bool(sdpa[0, 0, 6, 5])  # the block mask


def test_examples_are_found_where_the_position_ids_restart():
    positions = torch.cat([torch.arange(n) for n in (5, 3, 4)])[None]
    cumulative, longest, spans = example_spans(positions)
    assert cumulative.tolist() == [0, 5, 8, 12] and cumulative.dtype == torch.int32
    assert longest == 5 and spans == [(0, 5), (5, 8), (8, 12)]
    with pytest.raises(ValueError, match="one packed row of position ids"):
        example_spans(torch.arange(6).view(2, 3))


def test_packed_logits_equal_each_example_run_alone(smollm2_tokenizer):
    """fp32: the packed row's logits against each example's own forward pass, within fp32 rounding
    of the logits' size (the same sums, in one order or the other)."""
    model = tiny_random_qwen3(smollm2_tokenizer).eval()
    register_packed_attention()
    lengths = (7, 4, 9)
    ids = torch.randint(5, 1000, (1, sum(lengths)), generator=torch.Generator().manual_seed(0))
    starts = [0, 7, 11]
    with torch.no_grad():
        alone = torch.cat([model(input_ids=ids[:, s:s + n], use_cache=False).logits
                           for s, n in zip(starts, lengths)], dim=1)
        model.set_attn_implementation(PACKED_ATTENTION)
        packed = model(input_ids=ids, position_ids=torch.cat([torch.arange(n) for n in lengths])[None],
                       use_cache=False).logits
    # The same sums in another order: each logit within a few dozen fp32 roundings of the largest one.
    scale = float(alone.abs().max())
    torch.testing.assert_close(packed, alone, rtol=0, atol=64 * torch.finfo(torch.float32).eps * scale)
