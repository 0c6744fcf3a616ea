"""Packed rows' attention in training: transformers' SDPA with a block mask over the whole row
against one attention per example (lib/training/packed_attention.py, what the trainer runs).

    .venv/bin/python tests/bench/bench_packed_attention.py [--rows 2]

SmolLM2-135M-Instruct (the embedded model) in train mode, forward and backward of the LM loss on
packed rows of 8 GSM8K train examples each (the simple preset's batch: ~1,900 tokens a row with
the real data), in fp32 and under bf16 autocast (what `compute_dtype: auto` trains in on a CPU with
AVX512-BF16). The same rows for both, side by side in one process: seconds per row (after a
warm-up row), and the largest difference in loss.
"""

from __future__ import annotations

import argparse
import contextlib
import time

import common  # noqa: F401 (puts the repository on sys.path)
from common import embedded_model_path, gsm8k_file

EXAMPLES_PER_ROW = 8


def packed_rows(tokenizer, count: int) -> list:
    """`count` rows of EXAMPLES_PER_ROW consecutive GSM8K train examples (question and solution in
    the chat template), input ids and position ids restarting per example, as the collator packs them."""
    import torch

    from lib.chat import training_messages
    from lib.io import read_jsonl
    from lib.tasks.gsm8k import solution_text

    path, _ = gsm8k_file("train")
    examples = read_jsonl(path)[: count * EXAMPLES_PER_ROW]
    rows = []
    for start in range(0, len(examples), EXAMPLES_PER_ROW):
        ids = [tokenizer.apply_chat_template(training_messages(e["question"], solution_text(e["answer"], True)),
                                             tokenize=True, return_dict=True)["input_ids"]
               for e in examples[start:start + EXAMPLES_PER_ROW]]
        rows.append((torch.tensor([sum(ids, [])]), torch.cat([torch.arange(len(i)) for i in ids])[None]))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=2, help="timed rows per setting (one more warms up)")
    options = parser.parse_args()

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lib.training.packed_attention import PACKED_ATTENTION, register_packed_attention

    register_packed_attention()
    path = embedded_model_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).train()
    model.config.use_cache = False  # as in training: transformers looks for packed rows only then
    rows = packed_rows(tokenizer, options.rows + 1)
    print(f"packed attention benchmark: {options.rows} rows of {EXAMPLES_PER_ROW} GSM8K train examples"
          f" ({', '.join(str(ids.shape[1]) for ids, _ in rows[1:])} tokens), SmolLM2-135M forward + backward on"
          f" CPU, {torch.get_num_threads()} threads", flush=True)
    for dtype in (torch.float32, torch.bfloat16):
        autocast = (torch.autocast("cpu", dtype=torch.bfloat16) if dtype == torch.bfloat16
                    else contextlib.nullcontext())
        seconds, losses = {}, {}
        for implementation in ("sdpa", PACKED_ATTENTION):
            model.set_attn_implementation(implementation)
            times, values = [], []
            for ids, positions in rows:
                model.zero_grad(set_to_none=True)
                start = time.perf_counter()
                with autocast:
                    loss = model(input_ids=ids, position_ids=positions, labels=ids).loss
                loss.backward()
                times.append(time.perf_counter() - start)
                values.append(float(loss.detach()))
            seconds[implementation], losses[implementation] = sum(times[1:]) / options.rows, values
        difference = max(abs(a - b) for a, b in zip(losses["sdpa"], losses[PACKED_ATTENTION]))
        print(f"{str(dtype).removeprefix('torch.'):>8}: sdpa with the row's block mask {seconds['sdpa']:.2f} s/row,"
              f" per example ({PACKED_ATTENTION}) {seconds[PACKED_ATTENTION]:.2f} s/row -> x"
              f"{seconds['sdpa'] / seconds[PACKED_ATTENTION]:.2f} faster; largest loss difference {difference:.1e}"
              f" (losses ~{losses['sdpa'][0]:.2f})", flush=True)


if __name__ == "__main__":
    main()
