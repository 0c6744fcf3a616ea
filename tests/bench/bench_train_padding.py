"""Training throughput and peak memory: length-grouped dynamic padding vs pad-to-max batches.

    make bench                                    # all benchmarks
    .venv/bin/python tests/bench/bench_train_padding.py [--examples 256] [--batch 8]

Same examples, same model (the embedded SmolLM2-135M-Instruct, QLoRA nf4 on CPU), same
optimizer steps; only the batching differs:
  pad-to-max  every batch padded to the longest example of the data set, random order
  grouped     batches of similar length (Trainer's group_by_length), padded to their longest
Each mode runs in its own process, so its peak RSS is its own. Prints tokens/s (real, non-pad
tokens), the share of padding, peak RSS, and the ratios between the modes.
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

from common import REPO, embedded_model_path, gsm8k_file


def examples(count: int) -> tuple[list[dict], str]:
    """The first `count` GSM8K train problems (real data when ../shared has it, else the demo set cycled)."""
    from lib.tasks.data import load_gsm8k

    source, _ = gsm8k_file("train")
    problems = load_gsm8k(str(source), "train")
    return [problems[i % len(problems)] for i in range(count)], str(source)


def run_mode(mode: str, count: int, batch: int) -> dict:
    import datasets
    from transformers import AutoTokenizer, DataCollatorForSeq2Seq, Trainer, set_seed

    from lib.devices import resolve_compute_dtype
    from lib.models import load_base_for_training
    from lib.pipeline.config import TrainConfig
    from lib.training.sft_data import tokenize_problems
    from lib.training.trainer import attach_lora, training_arguments

    set_seed(0)
    path = embedded_model_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    problems, source = examples(count)
    rows, _ = tokenize_problems(tokenizer, problems, max_seq_len=1024, system_prompt=None, strip_annotations=True)
    data = datasets.Dataset.from_dict({"input_ids": [r["input_ids"] for r in rows], "labels": [r["labels"]
                                                                                               for r in rows]})
    longest = max(len(r["input_ids"]) for r in rows)

    dtype = resolve_compute_dtype("auto")
    model = load_base_for_training(path, "nf4", True, dtype, gradient_checkpointing=True)
    model, _ = attach_lora(model, r=16, alpha=32, dropout=0.0, target_modules=None)
    rss_loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    grouped = mode == "grouped"
    settings = TrainConfig(epochs=1, per_device_batch_size=batch, gradient_accumulation_steps=1,
                           group_by_length=grouped, packing="padded", logits="all", logging_steps=10_000,
                           save_steps=10_000)
    args = training_arguments(Path(os.environ["BENCH_TMP"]) / mode, settings, dtype, on_gpu=False)
    padding = {"padding": "longest"} if grouped else {"padding": "max_length", "max_length": longest}
    collator = DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100, **padding)
    trainer = Trainer(model=model, args=args, train_dataset=data, data_collator=collator)

    padded_tokens = 0
    sampler_batches = [list(b) for b in _batches(trainer, batch)]
    for indices in sampler_batches:
        width = max(len(rows[i]["input_ids"]) for i in indices) if grouped else longest
        padded_tokens += width * len(indices)
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    real_tokens = sum(len(r["input_ids"]) for r in rows)
    return {
        "mode": mode, "examples": len(rows), "source": source, "steps": trainer.state.global_step,
        "seconds": seconds, "tokens_per_second": real_tokens / seconds,
        "padding_share": 1 - real_tokens / padded_tokens, "longest": longest,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "training_rss_mb": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_loaded) / 1024,
        "compute_dtype": str(dtype).removeprefix("torch."),
    }


def _batches(trainer, batch: int):
    # The sampler the Trainer will use, to count the padded tokens each mode computes.
    indices = list(iter(trainer._get_train_sampler()))
    return (indices[i:i + batch] for i in range(0, len(indices), batch))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--mode", choices=["pad-to-max", "grouped"], help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.mode:
        print(json.dumps(run_mode(options.mode, options.examples, options.batch)))
        return

    import tempfile

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for mode in ("pad-to-max", "grouped"):
            done = subprocess.run([sys.executable, __file__, "--mode", mode, "--examples", str(options.examples),
                                   "--batch", str(options.batch)], capture_output=True, text=True, cwd=REPO,
                                  env={**os.environ, "BENCH_TMP": tmp}, check=True)
            results[mode] = json.loads(done.stdout.strip().splitlines()[-1])
    first = results["pad-to-max"]
    print(f"train padding benchmark: {first['examples']} examples from {first['source']}, batch {options.batch},"
          f" {first['steps']} steps, SmolLM2-135M QLoRA nf4 on CPU ({first['compute_dtype']} compute),"
          f" longest example {first['longest']} tokens")
    print(f"{'mode':<12} {'tokens/s':>9} {'padding':>8} {'peak RSS MB':>12} {'RSS in training MB':>19}")
    for r in results.values():
        print(f"{r['mode']:<12} {r['tokens_per_second']:>9.1f} {r['padding_share']:>8.1%} {r['peak_rss_mb']:>12.0f}"
              f" {r['training_rss_mb']:>19.0f}")
    grouped = results["grouped"]
    print(f"grouped / pad-to-max: tokens/s x{grouped['tokens_per_second'] / first['tokens_per_second']:.2f},"
          f" peak RSS x{grouped['peak_rss_mb'] / first['peak_rss_mb']:.2f},"
          f" RSS growth in training x{grouped['training_rss_mb'] / max(first['training_rss_mb'], 1):.2f}"
          " (goal: tokens/s >= 1.5x)")


if __name__ == "__main__":
    main()
