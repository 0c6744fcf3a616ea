"""Batches and loss: padding-free or padded collation, and the LM head run only where a label is
(the loss over assistant tokens without the full [tokens x vocab] logits)."""

from __future__ import annotations

import torch

from lib.chat import IGNORE_INDEX


def make_collator(tokenizer, packing: str, logits: str):
    """The batch builder for `train.packing` and `train.logits`.

    padding_free: transformers' DataCollatorWithFlattening puts a batch's examples back to back in
    one row with position ids restarting at 0 per example, -100 at each example's first label, and the
    examples' cumulative starts (`cu_seq_lens_q`, `max_length_q`), which the packed attention
    (lib/training/packed_attention.py) reads to keep attention within each example (SDPA instead
    derives a block mask from the position ids).
    padded: a row per example, input_ids padded with the pad id and labels with -100 (a real
    <|im_end|> label that is also the pad token keeps its id).
    """
    from transformers import DataCollatorForSeq2Seq, DataCollatorWithFlattening

    if packing == "padding_free":
        collator = DataCollatorWithFlattening(separator_id=IGNORE_INDEX, return_flash_attn_kwargs=True)
    else:
        collator = DataCollatorForSeq2Seq(tokenizer, padding="longest", label_pad_token_id=IGNORE_INDEX)
    return collator if logits == "all" else LabelledLogitsCollator(collator)


class LabelledLogitsCollator:
    """For `train.logits: labelled`: asks the model for its final hidden states and for no logits
    (an all-False `logits_to_keep`), so the LM head does not run inside the model;
    `LabelledLogitsLoss` runs it on the labelled positions only, a chunk at a time."""

    def __init__(self, collator):
        self.collator = collator

    def __call__(self, features):
        batch = self.collator(features)
        batch["logits_to_keep"] = torch.zeros_like(batch["labels"], dtype=torch.bool)
        batch["output_hidden_states"] = True
        return batch


LOSS_CHUNK_ROWS = 256  # labelled positions per LM-head chunk: 256 x 152k (Qwen3) x 4 B = 156 MB of fp32 logits


class LabelledLogitsLoss:
    """The causal LM loss (sum over labelled next tokens / their count, as transformers' own)
    computed from the final hidden states: the LM head runs only at positions whose next token has
    a label, LOSS_CHUNK_ROWS at a time, each chunk recomputed in the backward pass (activation
    checkpointing), so no [tokens, vocabulary] logits tensor larger than one chunk ever exists.

    The head runs in the training's compute dtype (`compute_dtype`, under autocast) and the
    cross-entropy in fp32. peft keeps the (tied) head's weight in fp32 and the Trainer's autocast
    covers the model's forward, not this loss: without it the head, ~2.5 TFLOP a Qwen3-4B
    micro-batch, would be an fp32 matmul. fp32 training (`compute_dtype` float32) is unchanged."""

    def __init__(self, lm_head, compute_dtype: torch.dtype = torch.float32):
        self.lm_head = lm_head
        self.compute_dtype = compute_dtype

    def __call__(self, outputs, labels, num_items_in_batch=None):
        from torch.utils.checkpoint import checkpoint

        hidden = outputs.hidden_states[-1]  # after the final norm: what the LM head reads
        keep = labels[:, 1:] != IGNORE_INDEX
        rows, targets = hidden[:, :-1][keep.to(hidden.device)], labels[:, 1:][keep].to(hidden.device)
        loss = hidden.new_zeros((), dtype=torch.float32)
        for start in range(0, rows.shape[0], LOSS_CHUNK_ROWS):
            chunk = slice(start, start + LOSS_CHUNK_ROWS)
            loss = loss + checkpoint(self._chunk_loss, rows[chunk], targets[chunk], use_reentrant=False)
        return loss / (num_items_in_batch if num_items_in_batch is not None else max(targets.numel(), 1))

    def _chunk_loss(self, rows, targets):
        with torch.autocast(rows.device.type, dtype=self.compute_dtype, enabled=self.compute_dtype != torch.float32):
            logits = self.lm_head(rows)
        return torch.nn.functional.cross_entropy(logits.float(), targets, reduction="sum")
