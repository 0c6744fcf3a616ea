"""The labelled-logits loss runs the LM head in the training's compute dtype, within that dtype's bound."""

import pytest
import torch
from transformers.modeling_outputs import CausalLMOutputWithPast

from lib.chat import IGNORE_INDEX
from lib.training.loss import LOSS_CHUNK_ROWS, LabelledLogitsLoss

BF16_UNIT_ROUNDOFF = 2.0 ** -8
FP32_UNIT_ROUNDOFF = 2.0 ** -24


def _case(seed=0, hidden_size=64, vocab=512, tokens=LOSS_CHUNK_ROWS + 40):
    """A head, hidden states and labels (every other next token labelled), as the Trainer hands them."""
    torch.manual_seed(seed)
    head = torch.nn.Linear(hidden_size, vocab, bias=False)  # fp32, as peft keeps the tied head
    hidden = torch.randn(1, tokens, hidden_size)
    labels = torch.randint(0, vocab, (1, tokens))
    labels[:, ::2] = IGNORE_INDEX
    outputs = CausalLMOutputWithPast(hidden_states=(hidden,))
    return head, hidden, labels, outputs


def test_a_bf16_run_computes_the_head_in_bf16_within_bf16s_bound_of_the_fp32_loss():
    head, hidden, labels, outputs = _case()
    exact = LabelledLogitsLoss(head, torch.float32)(outputs, labels)
    fast = LabelledLogitsLoss(head, torch.bfloat16)(outputs, labels)
    assert fast.dtype == torch.float32 and fast != exact  # the head ran in bf16

    # The bound, from the values: inputs and weights each rounded to bf16 (u each), products summed
    # in fp32 (d * 2^-24), the logit rounded to bf16 (u). A logit moves at most by `slack`; a row's
    # cross-entropy (logsumexp - the target's logit) by twice its largest slack; the loss, their mean.
    rows = hidden[0, :-1][labels[0, 1:] != IGNORE_INDEX]
    magnitude = rows.abs() @ head.weight.abs().T
    logits = rows @ head.weight.T
    u, d = BF16_UNIT_ROUNDOFF, rows.shape[-1]
    slack = (2 * u + u * u + d * FP32_UNIT_ROUNDOFF) * (1 + u) * magnitude + u * (logits.abs() + magnitude * 3 * u)
    bound = (2 * slack.max(-1).values).mean()
    assert (fast - exact).abs() <= bound, (float((fast - exact).abs()), float(bound))
    assert bound < 0.05 * exact  # and the bound is tight enough to mean something


def test_an_fp32_run_is_the_plain_fp32_loss_and_gradients_flow_in_both():
    head, hidden, labels, outputs = _case(seed=1)
    rows = hidden[0, :-1][labels[0, 1:] != IGNORE_INDEX]
    targets = labels[0, 1:][labels[0, 1:] != IGNORE_INDEX]
    reference = torch.nn.functional.cross_entropy(rows @ head.weight.T, targets)
    assert torch.allclose(LabelledLogitsLoss(head, torch.float32)(outputs, labels), reference,
                          rtol=64 * FP32_UNIT_ROUNDOFF, atol=0)
    for dtype in (torch.float32, torch.bfloat16):
        head.weight.grad = None
        LabelledLogitsLoss(head, dtype)(outputs, labels).backward()
        assert head.weight.grad is not None and head.weight.grad.dtype == torch.float32
        assert torch.isfinite(head.weight.grad).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_loss_does_not_depend_on_the_chunking(dtype, monkeypatch):
    head, _, labels, outputs = _case(seed=2)
    whole = LabelledLogitsLoss(head, dtype)(outputs, labels)
    monkeypatch.setattr("lib.training.loss.LOSS_CHUNK_ROWS", 7)
    chunked = LabelledLogitsLoss(head, dtype)(outputs, labels)
    # The same per-row values, summed in another grouping: fp32 summation error only.
    assert torch.allclose(chunked, whole, rtol=4 * labels.numel() * FP32_UNIT_ROUNDOFF, atol=0)
