"""The real job's shapes on one GPU: QLoRA training and engine decoding of Qwen3-4B-Instruct-2507.

    make bench                                   # runs this only where CUDA is usable
    .venv/bin/python tests/bench/bench_gpu.py [--card h100|h200|a100] [--batches 64 128]
    .venv/bin/python tests/bench/bench_gpu.py --tiny     # the same code paths on a 2-layer model (CPU too)
    .venv/bin/python tests/bench/bench_gpu.py --compiled # also the static step through torch.compile
    .venv/bin/python tests/bench/bench_gpu.py --attention-only   # (c) alone, at the real shapes (CPU too)

Qwen3-4B-Instruct-2507's architecture from its config values written below (no download: random
weights, the real shapes), bf16, saved once as safetensors to a temporary folder so the 4-bit
loader quantizes it as it would the real checkpoint.
(a) QLoRA training as the train stage does it (nf4 + double quant, bf16 compute, gradient
    checkpointing, LoRA r16 on all projections, padding-free batches, labelled-only logits) at the
    simple preset's batch of 8 x 384 tokens: tokens/s, peak GPU memory and the FLOP utilisation
    (6 x parameters x tokens / time over the card's dense bf16 peak).
(b) Decoding: the engine at each batch size with an 800-token shared prefix and 40-token
    suffixes, 256 new tokens each: the dynamic decode step with each shared-prefix attention kernel
    (eager matmul, fused with log-sum-exp merge) and the host reading tokens every step or every 8,
    and the static step (a CUDA graph replay on CUDA) with the fused kernel; against plain
    left-padded batched `generate` on the same prompts (its attention: SDPA over the prefix copied
    into every row) and the floor: the step's bf16 weights and live cache read once from HBM. Per
    variant: tokens/s, host time per step, and GSM8K's 1,319 questions at that rate.
(c) The attention kernels alone, one layer's decode step at Qwen3-4B's heads (32 query, 8 key/value,
    dim 128) with an 800-token prefix and 300 own tokens a row, bf16: eager, fused, and one public
    SDPA call over [prefix ; own keys], which needs the prefix copied into every row each step.
Prints ratios; docs/benchmarks.md keeps the figures of a real card.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from lib.checks.gpu import QWEN3_4B, TINY, save_random_qwen3  # noqa: E402 (after the path is set)

# (decode step, attention kernel, steps per sync); static is replayed as a CUDA graph on CUDA
ENGINE_VARIANTS = [("dynamic", "eager", 1), ("dynamic", "fused", 1), ("dynamic", "eager", 8), ("dynamic", "fused", 8),
                   ("static", "fused", 8)]
# --compiled adds the static step captured by torch.compile(mode="reduce-overhead") instead of a plain
# CUDA graph (inductor's fused kernels inside its own graphs; minutes of compiling per batch size)
COMPILED_VARIANT = ("static-compiled", "fused", 8)
GSM8K_QUESTIONS = 1319
CARDS = {  # dense bf16 peak FLOP/s, HBM bytes/s
    "h100": (989e12, 3.35e12), "h200": (989e12, 4.8e12), "a100": (312e12, 2.0e12),
}


def bench_training(folder: Path, shape: dict, batch: int, length: int, steps: int) -> dict:
    """The train stage's own path: lib.training.trainer's TrainingArguments, collator and loss in transformers'
    Trainer (train mode, LoRA dropout, gradient checkpointing, bf16 autocast), timed per optimizer step
    by a callback; the first step (kernel selection, allocator growth) is a warm-up left out."""
    import datasets
    import torch
    from transformers import Trainer, TrainerCallback

    from lib.chat import IGNORE_INDEX
    from lib.models import load_base_for_training
    from lib.pipeline.config import TrainConfig
    from lib.training.loss import LabelledLogitsLoss, make_collator
    from lib.training.trainer import attach_lora, training_arguments

    model = load_base_for_training(str(folder), "nf4", True, torch.bfloat16, gradient_checkpointing=True)
    model, _ = attach_lora(model, r=16, alpha=32, dropout=0.05, target_modules=None)
    generator = torch.Generator().manual_seed(0)
    rows = [torch.randint(3, shape["vocab_size"], (length,), generator=generator).tolist()
            for _ in range(batch * (steps + 1))]
    data = datasets.Dataset.from_dict({  # loss on the second half of each row: the assistant turn
        "input_ids": rows, "labels": [[IGNORE_INDEX] * (length // 2) + row[length // 2:] for row in rows]})
    settings = TrainConfig(epochs=1, per_device_batch_size=batch, gradient_accumulation_steps=1, warmup_ratio=0.0,
                           logging_steps=10**6, save_steps=10**6)  # no log or checkpoint inside the timing
    step_ends = []

    class StepClock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            step_ends.append(time.perf_counter())

    with tempfile.TemporaryDirectory() as output:
        args = training_arguments(Path(output), settings, torch.bfloat16, on_gpu=torch.cuda.is_available())
        trainer = Trainer(model=model, args=args, train_dataset=data, data_collator=make_collator(None, "padding_free",
                          "labelled"), compute_loss_func=LabelledLogitsLoss(model.get_output_embeddings()),
                          callbacks=[StepClock()])
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        trainer.train()
    seconds = (step_ends[-1] - step_ends[0]) / (len(step_ends) - 1)
    peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else float("nan")
    return {"tokens_per_s": batch * length / seconds, "seconds_per_step": seconds, "peak_gib": peak}


def compiled_capture(body):
    """The static step through torch.compile(mode="reduce-overhead"): the slots' tensors it updates in
    place are marked as fixed addresses, so its CUDA graphs may keep them (the cache's already are)."""
    import torch

    rows = body.args[1]  # body = partial(step_body, model, rows)
    for tensor in (rows.mask, rows.positions, rows.last):
        torch._dynamo.mark_static_address(tensor)
    return torch.compile(body, mode="reduce-overhead", fullgraph=True, dynamic=False)


def bench_decoding(folder: Path, shape: dict, batches: list[int], prefix: int, suffix: int, new_tokens: int,
                   variants: list[tuple] = ENGINE_VARIANTS) -> dict:
    """Per batch: each engine variant's generated tokens/s and host milliseconds per decode step
    (the time to issue a step, the token reads between blocks left out), and plain generate's tokens/s."""
    import torch
    from transformers import AutoModelForCausalLM

    from lib.devices import process_state
    from lib.engine.prefix_sharing import PrefixSharingEngine
    from lib.engine.static import StaticSlotsEngine

    class Tokens:  # the engine decodes text only for stop strings; none here
        pad_token_id, eos_token_id = 0, shape["eos_token_id"]

        def decode(self, ids, skip_special_tokens=True):
            return ""

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16,
                                                 device_map={"": process_state().device}).eval()
    generator = torch.Generator().manual_seed(1)
    shared = torch.randint(3, shape["vocab_size"], (prefix,), generator=generator).tolist()
    results = {}
    for batch in batches:
        prompts = [shared + torch.randint(3, shape["vocab_size"], (suffix,), generator=generator).tolist()
                   for _ in range(batch)]
        engines = {}
        for decode, attention, steps_per_sync in variants:
            # No EOS: every row decodes all new_tokens, the same work for all. A short run of the same
            # variant first, so no timed variant pays for kernel selection, compiling or allocator growth.
            for tokens in (8, new_tokens):
                options = dict(eos_token_ids=(-1,), attention=attention, steps_per_sync=steps_per_sync)
                if decode == "static-compiled":
                    options["capture"] = compiled_capture
                engine = (PrefixSharingEngine if decode == "dynamic" else StaticSlotsEngine)(
                    model, Tokens(), tokens, batch, **options)
                host = _time_steps(engine)
                _, stats = engine.generate(prompts)
            mode = "static-torch-compile" if decode == "static-compiled" else engine.decode_mode
            engines[mode, attention, steps_per_sync] = {
                "tps": stats.generated_tokens / stats.seconds, "host_ms": 1e3 * sum(host) / len(host)}
        ids = torch.tensor(prompts, device=model.device)
        for tokens in (8, new_tokens):  # warm-up, then timed
            start = time.perf_counter()
            with torch.inference_mode():
                out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=tokens,
                                     min_new_tokens=tokens, do_sample=False, pad_token_id=0)
            if torch.cuda.is_available():
                torch.cuda.synchronize()
        plain_tps = (out.shape[1] - ids.shape[1]) * batch / (time.perf_counter() - start)
        results[batch] = {"engines": engines, "generate_tps": plain_tps}
    return results


def _time_steps(engine) -> list[float]:
    """Seconds the host spends in each of the engine's decode steps (filled as it runs)."""
    seconds, step = [], engine._decode_step

    def timed(rows):
        start = time.perf_counter()
        step(rows)
        seconds.append(time.perf_counter() - start)

    engine._decode_step = timed
    return seconds


def step_floor_seconds(shape: dict, parameters: int, batch: int, prefix: int, suffix: int, new_tokens: int,
                       bandwidth: float) -> float:
    """The least time of one decode step on this card: its bf16 weights, the shared prefix's cache
    and the rows' own cache (on average suffix + half the new tokens) read once from HBM."""
    kv_bytes_per_token = 2 * shape["num_hidden_layers"] * shape["num_key_value_heads"] * shape["head_dim"] * 2
    cached = prefix + batch * (suffix + new_tokens / 2)
    return (2 * parameters + cached * kv_bytes_per_token) / bandwidth


def bench_attention(batches: list[int], heads: tuple[int, int, int], prefix: int, own: int, repeats: int) -> dict:
    """Milliseconds per call of each kernel for one layer's decode step, and each one's largest
    difference from the eager kernel in fp32 on the same (bf16-valued) inputs."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    from lib.devices import process_state
    from lib.engine.attention import _eager_attention, _fused_attention

    device = process_state().device
    query_heads, kv_heads, dim = heads
    generator = torch.Generator().manual_seed(2)

    def rand(*shape):
        return torch.randn(*shape, generator=generator).to(device=device, dtype=torch.bfloat16)

    class Layer(torch.nn.Module):  # what transformers' SDPA path reads of an attention module
        is_causal, num_key_value_groups, training = True, query_heads // kv_heads, False

    def one_call(query, keys, values, mask, prefix_kv, scale):
        """transformers' own SDPA attention (its GQA handling and mask path) over [prefix ; own keys],
        the prefix copied into every row as plain `generate`'s cache holds it."""
        copied_keys = torch.cat([prefix_kv[0].expand(len(keys), -1, -1, -1), keys], dim=2)
        copied_values = torch.cat([prefix_kv[1].expand(len(values), -1, -1, -1), values], dim=2)
        full_mask = torch.cat([mask.new_ones(*mask.shape[:-1], prefix_kv[0].shape[2]), mask], dim=-1)
        output, _ = sdpa_attention_forward(Layer(), query, copied_keys, copied_values, full_mask, scaling=scale)
        return output.transpose(1, 2)  # transformers returns [batch, length, heads, dim]

    results = {}
    for batch in batches:
        query, keys, values = rand(batch, query_heads, 1, dim), rand(batch, kv_heads, own, dim), rand(
            batch, kv_heads, own, dim)
        prefix_kv = (rand(1, kv_heads, prefix, dim), rand(1, kv_heads, prefix, dim))
        mask = torch.ones(batch, 1, 1, own, dtype=torch.bool, device=device)
        mask[::2, ..., : own // 3] = False  # rows of different lengths
        kernels = {"eager": _eager_attention, "fused": _fused_attention, "transformers SDPA, prefix copied": one_call}
        outputs, times = {}, {}
        for name, kernel in kernels.items():
            outputs[name] = kernel(query, keys, values, mask, prefix_kv, dim ** -0.5)  # warm-up
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            start = time.perf_counter()
            for _ in range(repeats):
                kernel(query, keys, values, mask, prefix_kv, dim ** -0.5)
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            times[name] = (time.perf_counter() - start) / repeats * 1e3
        exact = _eager_attention(query.float(), keys.float(), values.float(), mask,
                                 (prefix_kv[0].float(), prefix_kv[1].float()), dim ** -0.5)
        worst = {name: float((out.float() - exact).abs().max()) for name, out in outputs.items()}
        results[batch] = {"ms": times, "max_error": worst, "max_output": float(exact.abs().max())}
    return results


def print_attention(results: dict, prefix: int, own: int) -> None:
    for batch, result in results.items():
        eager = result["ms"]["eager"]
        line = ", ".join(f"{name} {ms:.3f} ms (x{eager / ms:.2f} of eager, max error {result['max_error'][name]:.1e})"
                         for name, ms in result["ms"].items())
        print(f"attention, one layer's decode step, batch {batch}, prefix {prefix} + {own} own tokens: {line};"
              f" errors against fp32, outputs up to {result['max_output']:.2f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--card", choices=sorted(CARDS), default="h100", help="for the peak FLOP/s and bandwidth")
    parser.add_argument("--batches", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--train-steps", type=int, default=5)
    parser.add_argument("--tiny", action="store_true", help="a 2-layer model of the same kind (checks the code paths)")
    parser.add_argument("--compiled", action="store_true",
                        help="also the static step through torch.compile(mode='reduce-overhead') (slow to compile)")
    parser.add_argument("--only", action="append", choices=["train", "decode", "attention"],
                        help="measure only these parts (repeat; default all)")
    parser.add_argument("--model-folder", type=Path, default=None,
                        help="the random model folder: used when present, else built there (default: temporary)")
    parser.add_argument("--attention-only", action="store_true", help="the same as --only attention")
    options = parser.parse_args()
    parts = set(options.only or (["attention"] if options.attention_only else ["train", "decode", "attention"]))

    import torch

    heads = (QWEN3_4B["num_attention_heads"], QWEN3_4B["num_key_value_heads"], QWEN3_4B["head_dim"])
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    if parts == {"attention"}:
        print(f"attention kernels on {device}, bf16, Qwen3-4B heads {heads}", flush=True)
        print_attention(bench_attention(options.batches, heads, 800, 300, 50 if torch.cuda.is_available() else 5),
                        800, 300)
        return
    if not torch.cuda.is_available() and not options.tiny:
        print("bench_gpu: no CUDA device; nothing measured (use --tiny to check the code paths on the CPU)")
        return
    shape = TINY if options.tiny else QWEN3_4B
    flops, bandwidth = CARDS[options.card]
    new_tokens = 8 if options.tiny else 256
    with tempfile.TemporaryDirectory() as scratch:
        folder = options.model_folder or Path(scratch) / "qwen3-4b-shaped"
        if (folder / "config.json").is_file():
            from transformers import AutoConfig

            config = AutoConfig.from_pretrained(folder)
            shape = {**shape, "vocab_size": config.vocab_size, "eos_token_id": config.eos_token_id}
            parameters = count_parameters(config)
        else:
            parameters = save_random_qwen3(shape, folder)
        print(f"GPU benchmark on {device} ({'tiny shape' if options.tiny else 'Qwen3-4B shape'},"
              f" {parameters / 1e9:.2f}B parameters, random bf16 weights); peaks assumed for {options.card}:"
              f" {flops / 1e12:.0f} TFLOP/s bf16, {bandwidth / 1e12:.2f} TB/s", flush=True)
        if "train" in parts:
            length = 64 if options.tiny else 384
            training = bench_training(folder, shape, batch=8, length=length, steps=options.train_steps)
            utilisation = 6 * parameters * training["tokens_per_s"] / flops
            print(f"QLoRA train, batch 8 x {length} tokens: {training['tokens_per_s']:.0f} tokens/s,"
                  f" {training['seconds_per_step']:.2f} s/step, peak {training['peak_gib']:.1f} GiB,"
                  f" FLOP utilisation {utilisation:.1%} (6 N tokens / peak)", flush=True)
        if "decode" in parts:
            prefix, suffix = (32, 8) if options.tiny else (800, 40)
            for batch in [4] if options.tiny else options.batches:
                result = bench_decoding(folder, shape, [batch], prefix=prefix, suffix=suffix, new_tokens=new_tokens,
                                        variants=ENGINE_VARIANTS + [COMPILED_VARIANT] * options.compiled)[batch]
                print_decoding(batch, result, shape, parameters, prefix, suffix, new_tokens, bandwidth)
    if "attention" in parts:
        prefix, own = (32, 16) if options.tiny else (800, 300)
        kernel_heads = (4, 2, 32) if options.tiny else heads
        print_attention(bench_attention([4] if options.tiny else options.batches, kernel_heads, prefix, own,
                                        5 if options.tiny else 50), prefix, own)


def count_parameters(config) -> int:
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        return sum(p.numel() for p in AutoModelForCausalLM.from_config(config).parameters())


def print_decoding(batch: int, result: dict, shape: dict, parameters: int, prefix: int, suffix: int, new_tokens: int,
                   bandwidth: float) -> None:
    floor = step_floor_seconds(shape, parameters, batch, prefix, suffix, new_tokens, bandwidth)
    print(f"decode, batch {batch}, {prefix}-token shared prefix: plain generate {result['generate_tps']:.0f}"
          f" tokens/s; bandwidth floor {batch / floor:.0f} tokens/s ({1e3 * floor:.2f} ms per step: weights"
          f" and live cache read once)")
    for (decode, attention, steps_per_sync), figures in result["engines"].items():
        tps = figures["tps"]
        print(f"  engine, {decode} decode, {attention} attention, host reads every {steps_per_sync} step(s):"
              f" {tps:.0f} tokens/s, x{tps / result['generate_tps']:.2f} of generate, x{batch / floor / tps:.1f}"
              f" of the floor's time; host {figures['host_ms']:.2f} ms per step; GSM8K's {GSM8K_QUESTIONS}"
              f" questions x {new_tokens} tokens -> {GSM8K_QUESTIONS * new_tokens / tps:.0f} s", flush=True)


if __name__ == "__main__":
    main()
