"""Training memory and throughput: padded vs padding-free batches, logits everywhere vs only where labelled.

    make bench                                    # all benchmarks
    .venv/bin/python tests/bench/bench_train_memory.py [--examples 128] [--batch 8] [--max-len 512]

The train stage's job on real GSM8K train examples (../shared/data/gsm8k when present, else the
demo set): SmolLM2-135M nf4 + double quant, fp32 compute, LoRA r16/alpha 32 on all 7
projections, batch 8, 1 epoch, gradient checkpointing. Four modes, each in its own process (its
peak RSS is its own):
  padded               the stage before this change: length-grouped batches padded to their longest, logits
                       everywhere
  padded+labelled      the same batches, the LM head only where the next token has a label
  padding_free         random batches flattened into one row (DataCollatorWithFlattening), logits everywhere
  padding_free+labelled  the new default
Prints peak RSS, tokens/s (real tokens), the ratios to `padded`, and an estimate of where the
peak goes (weights, LoRA + optimizer state, activations kept by checkpointing, logits).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from bench_train_padding import examples  # the same examples as the padding bench
from common import REPO, embedded_model_path

MODES = {"padded": ("padded", "all"), "padded+labelled": ("padded", "labelled"),
         "padding_free": ("padding_free", "all"), "padding_free+labelled": ("padding_free", "labelled")}


def run_mode(mode: str, count: int, batch: int, max_len: int) -> dict:
    import datasets
    from transformers import AutoTokenizer, Trainer, set_seed

    from lib.chat import IGNORE_INDEX
    from lib.models import load_base_for_training
    from lib.pipeline.config import TrainConfig
    from lib.training.loss import LOSS_CHUNK_ROWS, LabelledLogitsLoss, make_collator
    from lib.training.sft_data import tokenize_problems
    from lib.training.trainer import attach_lora, training_arguments

    set_seed(0)
    packing, logits = MODES[mode]
    path = embedded_model_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    problems, source = examples(count)
    rows, _ = tokenize_problems(tokenizer, problems, max_seq_len=max_len, system_prompt=None, strip_annotations=True)
    data = datasets.Dataset.from_dict({"input_ids": [r["input_ids"] for r in rows], "labels": [r["labels"]
                                                                                               for r in rows]})

    import torch

    model = load_base_for_training(path, "nf4", True, torch.float32, gradient_checkpointing=True)
    model, _ = attach_lora(model, r=16, alpha=32, dropout=0.0, target_modules=None)
    weights_mb = model.get_memory_footprint() / 2**20
    trainable = model.get_nb_trainable_parameters()[0]
    rss_loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    settings = TrainConfig(epochs=1, per_device_batch_size=batch, gradient_accumulation_steps=1,
                           group_by_length=packing == "padded", packing=packing, logits=logits,
                           logging_steps=10_000, save_steps=10_000)
    args = training_arguments(Path(os.environ["BENCH_TMP"]) / mode, settings, torch.float32, on_gpu=False)
    loss = LabelledLogitsLoss(model.get_output_embeddings()) if logits == "labelled" else None
    trainer = Trainer(model=model, args=args, train_dataset=data, compute_loss_func=loss,
                      data_collator=make_collator(tokenizer, packing, logits))
    # The batches the Trainer will make, for the peak batch's positions and logits.
    order = list(iter(trainer._get_train_sampler()))
    peak_positions = peak_logit_rows = 0
    for start in range(0, len(order), batch):
        members = [rows[i] for i in order[start:start + batch]]
        lengths = [len(r["input_ids"]) for r in members]
        positions = max(lengths) * len(lengths) if packing == "padded" else sum(lengths)
        labelled = sum(sum(label != IGNORE_INDEX for label in r["labels"][1:]) for r in members)
        peak_positions = max(peak_positions, positions)
        peak_logit_rows = max(peak_logit_rows, labelled if logits == "labelled" else positions)
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    config = model.config
    return {
        "mode": mode, "examples": len(rows), "source": source, "steps": trainer.state.global_step, "seconds": seconds,
        "tokens_per_second": sum(len(r["input_ids"]) for r in rows) / seconds,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_loaded_mb": rss_loaded / 1024, "weights_mb": weights_mb,
        # LoRA weights, gradients and Adam's two moments, fp32: 16 bytes a parameter.
        "lora_and_optimizer_mb": trainable * 16 / 2**20,
        # Checkpointing keeps each layer's input (fp32) and recomputes one layer at a time.
        "checkpointed_activations_mb": config.num_hidden_layers * peak_positions * config.hidden_size * 4 / 2**20,
        # fp32 logits, their log-softmax in the loss and their gradient: 3 copies of [rows, vocabulary]
        # (labelled: one chunk of rows at a time).
        "logits_mb": 3 * min(peak_logit_rows, LOSS_CHUNK_ROWS if logits == "labelled" else peak_logit_rows)
                     * config.vocab_size * 4 / 2**20,
        "peak_positions": peak_positions, "peak_logit_rows": peak_logit_rows,
        "longest": max(len(r["input_ids"]) for r in rows),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=128)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--max-len", type=int, default=512)
    parser.add_argument("--mode", choices=list(MODES), help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.mode:
        print(json.dumps(run_mode(options.mode, options.examples, options.batch, options.max_len)))
        return

    import tempfile

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for mode in MODES:
            done = subprocess.run([sys.executable, __file__, "--mode", mode, "--examples", str(options.examples),
                                   "--batch", str(options.batch), "--max-len", str(options.max_len)],
                                  capture_output=True, text=True, cwd=REPO, env={**os.environ, "BENCH_TMP": tmp})
            if done.returncode != 0:
                sys.exit(f"{mode} failed:\n{done.stderr[-3000:]}")
            results[mode] = json.loads(done.stdout.strip().splitlines()[-1])
    base = results["padded"]
    print(f"train memory benchmark: {base['examples']} examples from {base['source']}, batch {options.batch},"
          f" max length {options.max_len}, {base['steps']} steps, SmolLM2-135M nf4 + double quant, fp32 compute,"
          f" LoRA r16 on 7 projections, gradient checkpointing; longest example {base['longest']} tokens")
    print(f"{'mode':<22} {'peak RSS MB':>11} {'x padded':>9} {'tokens/s':>9} {'x padded':>9}"
          f" | estimate of the peak batch: {'positions':>9} {'logit rows':>10} {'logits MB':>9} {'activations MB':>14}")
    for r in results.values():
        print(f"{r['mode']:<22} {r['peak_rss_mb']:>11.0f} {r['peak_rss_mb'] / base['peak_rss_mb']:>9.2f}"
              f" {r['tokens_per_second']:>9.1f} {r['tokens_per_second'] / base['tokens_per_second']:>9.2f}"
              f" | {'':>27} {r['peak_positions']:>9} {r['peak_logit_rows']:>10} {r['logits_mb']:>9.0f}"
              f" {r['checkpointed_activations_mb']:>14.0f}")
    print(f"fixed in every mode: weights {base['weights_mb']:.0f} MB,"
          f" LoRA + gradients + Adam {base['lora_and_optimizer_mb']:.0f} MB,"
          f" process RSS after loading (libraries, weights) {base['rss_loaded_mb']:.0f} MB")
    new = results["padding_free+labelled"]
    print(f"padding_free+labelled / padded: peak RSS x{new['peak_rss_mb'] / base['peak_rss_mb']:.2f} (goal <= 0.5),"
          f" tokens/s x{new['tokens_per_second'] / base['tokens_per_second']:.2f} (goal >= 1.0)")


if __name__ == "__main__":
    main()
