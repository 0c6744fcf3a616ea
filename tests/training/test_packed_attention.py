"""Packed rows' attention (lib/training/packed_attention.py): each example attends to itself, and
transformers builds no tokens x tokens mask for it. Its loss and gradients against the padded batch
are checked with the other packing modes in tests/training/test_trainer.py; the CUDA kernel in
tests/test_gpu.py."""

import pytest
import torch

from lib.training.packed_attention import PACKED_ATTENTION, packed_attention, register_packed_attention
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


def test_the_padding_free_collator_hands_the_attention_each_examples_start(smollm2_tokenizer):
    from lib.training.loss import make_collator

    features = [{"input_ids": list(range(5, 5 + n)), "labels": list(range(5, 5 + n))} for n in (5, 3, 4)]
    batch = make_collator(smollm2_tokenizer, "padding_free", "labelled")(features)
    assert batch["cu_seq_lens_q"].tolist() == [0, 5, 8, 12] and batch["cu_seq_lens_q"].dtype == torch.int32
    assert batch["max_length_q"] == 5 and batch["position_ids"].tolist() == [[0, 1, 2, 3, 4, 0, 1, 2, 0, 1, 2, 3]]


def test_packed_attention_without_the_examples_starts_says_what_it_needs():
    query = torch.zeros(1, 2, 4, 8)
    with pytest.raises(ValueError, match="needs one packed row and its examples' starts"):
        packed_attention(None, query, query, query, None)


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
                       cu_seq_lens_q=torch.tensor([*starts, sum(lengths)], dtype=torch.int32),
                       max_length_q=max(lengths), use_cache=False).logits
    # The same sums in another order: each logit within a few dozen fp32 roundings of the largest one.
    scale = float(alone.abs().max())
    torch.testing.assert_close(packed, alone, rtol=0, atol=64 * torch.finfo(torch.float32).eps * scale)


def test_qlora_packed_rows_reach_the_attention_in_the_autocast_dtype_and_match_the_padded_batch(
        smollm2_tokenizer, tmp_path, monkeypatch):
    """The train stage's path: a tiny Qwen3 loaded as an nf4 base (peft's prepare_model_for_kbit_training
    keeps its norms in fp32), LoRA, bf16 autocast, packed rows. q, k and v must reach the kernel choice
    in bf16 (in fp32 the CUDA varlen kernel refuses them and every layer falls back to one call per
    example), and the loss and LoRA gradients must equal the padded batch's within bf16 rounding:
    each tensor within 8 bf16 units of its largest value (a row attending across its examples moves
    the gradients by more than half of it)."""
    import lib.training.packed_attention as packed
    from lib.chat import tokenize_with_labels, training_messages
    from lib.models import load_base_for_training
    from lib.training.loss import make_collator
    from lib.training.trainer import attach_lora

    tiny_random_qwen3(smollm2_tokenizer).save_pretrained(tmp_path, safe_serialization=True)
    model = load_base_for_training(str(tmp_path), "nf4", True, torch.bfloat16, gradient_checkpointing=True)
    model, _ = attach_lora(model, r=4, alpha=8, dropout=0.0, target_modules=None)
    model.train()  # as the Trainer runs it: checkpointed layers recompute their attention in the backward pass
    with torch.no_grad():  # LoRA B starts at zero; values make its gradients depend on the attention
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.02, generator=torch.Generator().manual_seed(0))
    examples = [tokenize_with_labels(smollm2_tokenizer, training_messages(q, a)) for q, a in
                [("What is 2 + 3?", "2 + 3 = 5.\n#### 5"), ("Tom has 4 apples and eats one. How many are left?",
                                                          "4 - 1 = 3 apples are left.\n#### 3"), ("1+1?", "#### 2")]]
    features = [{"input_ids": e.input_ids, "labels": e.labels} for e in examples]
    kernel_dtypes = []
    choose = packed._varlen_kernel
    monkeypatch.setattr(packed, "_varlen_kernel", lambda query, dropout: kernel_dtypes.append(query.dtype)
                        or choose(query, dropout))

    def loss_and_grads(packing):
        packed.set_training_attention(model, packing, torch.device("cpu"))
        model.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(**make_collator(smollm2_tokenizer, packing, "all")(features)).loss
        loss.backward()
        return loss.detach().float(), {n: p.grad.float() for n, p in model.named_parameters() if p.requires_grad}

    padded_loss, padded_grads = loss_and_grads("padded")
    packed_loss, packed_grads = loss_and_grads("padding_free")
    assert model.config._attn_implementation == PACKED_ATTENTION
    assert len(kernel_dtypes) == 4 and set(kernel_dtypes) == {torch.bfloat16}, kernel_dtypes  # 2 layers, recomputed
    unit = torch.finfo(torch.bfloat16).eps
    torch.testing.assert_close(packed_loss, padded_loss, rtol=8 * unit, atol=0)
    for name, grad in packed_grads.items():
        scale = float(padded_grads[name].abs().max())
        torch.testing.assert_close(grad, padded_grads[name], rtol=0, atol=8 * unit * scale, msg=name)
