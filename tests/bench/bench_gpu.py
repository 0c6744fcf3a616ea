"""The real job's shapes on one GPU: QLoRA training and engine decoding of Qwen3-4B-Instruct-2507.

    make bench                                   # runs this only where CUDA is usable
    .venv/bin/python tests/bench/bench_gpu.py [--card h100|h200|a100] [--presets simple strong] [--batches 64]
    .venv/bin/python tests/bench/bench_gpu.py --tiny     # the same code paths on a 2-layer model (CPU too)
    .venv/bin/python tests/bench/bench_gpu.py --compiled # also the static step compiled by inductor
    .venv/bin/python tests/bench/bench_gpu.py --attention-only   # (c) alone, at the real shapes (CPU too)

Qwen3-4B-Instruct-2507's architecture from its config values written below (no download: random
weights, the real shapes), bf16, saved once as safetensors to a temporary folder so the 4-bit
loader quantizes it as it would the real checkpoint. First the card itself: the bytes/s of a
device-to-device copy and the FLOP/s of a bf16 matmul, measured, are the floors below.
(a) QLoRA training as the train stage does it (nf4 + double quant, bf16 compute, gradient
    checkpointing, LoRA r16 on all projections, padding-free batches, labelled-only logits with the
    head in bf16) at the simple preset's batch of 8 x 384 tokens: tokens/s, peak GPU memory and the
    FLOP utilisation (6 x parameters x tokens / time over the measured matmul rate).
(b) Decoding one evaluation chunk (256 questions through 64 slots) at each preset's shape: its
    k-shot shared prefix, question suffixes and answer lengths drawn from GSM8K's measured
    quantiles (rows stop at them: refills and the drain are timed), its max_new_tokens (512, or
    1,024 for strong). Per engine variant (the static step replayed as CUDA graphs, the dynamic
    step): the median GPU time of a decode step (without the steps that record a window or first
    replay it) against the floor (the bf16 weights and the keys and values of the columns in use,
    read once at the measured bandwidth), the keys and values read against those in use, and the
    chunk's wall time (prefills, refills and recordings included) projected to GSM8K's 1,319 questions.
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

from common import CompiledStep  # noqa: E402 (tests/bench/common.py, beside this script)

from lib.checks.gpu import QWEN3_4B, TINY, save_random_qwen3  # noqa: E402 (after the path is set)

# (decode step, attention kernel, steps per sync); static is replayed as CUDA graphs on CUDA
ENGINE_VARIANTS = [("static", "fused", 8), ("dynamic", "fused", 8)]
# --compiled adds the static step compiled by inductor (fused kernels, no graphs of its own) and
# recorded in the engine's graphs (tests/bench/common.CompiledStep)
COMPILED_VARIANT = ("static-compiled", "fused", 8)
GSM8K_QUESTIONS = 1319
CARDS = {  # datasheet dense bf16 peak FLOP/s, HBM bytes/s: printed beside the measured rates
    "h100": (989e12, 3.35e12), "h200": (989e12, 4.8e12), "a100": (312e12, 2.0e12),
}
# The evaluation's shapes, measured on GSM8K's 1,319 test questions with the target's chat template
# (../shared/templates/qwen3_instruct_2507.jinja) and SmolLM2's tokenizer (Qwen's is not on these
# machines; both are byte-level BPEs of English): the shared few-shot prefix at each preset's k, and
# twenty quantiles (2.5%, 7.5%, ..., 97.5%) of a question's own tokens after it and of a fine-tuned
# model's solution (../shared/data/gsm8k/example_model_solutions.jsonl, 6b_finetuning, + its EOS).
PRESETS = {"simple": (3, 326, 512), "medium": (5, 577, 512), "strong": (8, 1124, 1024)}  # k, prefix, max_new_tokens
SUFFIX_QUANTILES = [36, 41, 45, 47, 50, 53, 55, 58, 60, 63, 66, 68, 71, 74, 78, 82, 87, 93, 104, 123]
ANSWER_QUANTILES = [52, 63, 70, 79, 86, 91, 97, 102, 109, 114, 121, 128, 137, 145, 153, 163, 175, 192, 214, 271]
TINY_SCALE = 8  # --tiny divides every length by this: the code paths on a CPU, in seconds


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
    from lib.training.packed_attention import packed_kernel, set_training_attention
    from lib.training.trainer import attach_lora, training_arguments

    model = load_base_for_training(str(folder), "nf4", True, torch.bfloat16, gradient_checkpointing=True)
    device = next(model.parameters()).device
    attention = set_training_attention(model, "padding_free", device)  # the train stage's own setting
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
        loss = LabelledLogitsLoss(model.get_output_embeddings(), torch.bfloat16)  # the head in bf16, as trained
        trainer = Trainer(model=model, args=args, train_dataset=data, data_collator=make_collator(None, "padding_free",
                          "labelled"), compute_loss_func=loss,
                          callbacks=[StepClock()])
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        trainer.train()
    seconds = (step_ends[-1] - step_ends[0]) / (len(step_ends) - 1)
    peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else float("nan")
    return {"tokens_per_s": batch * length / seconds, "seconds_per_step": seconds, "peak_gib": peak,
            "attention": f"{attention}: {packed_kernel(device, torch.bfloat16)}"}




def synchronize(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_card(device, small: bool) -> tuple[float, float]:
    """(bytes/s of a device-to-device copy, FLOP/s of a bf16 matmul) on this device: the floors'
    rates, measured rather than taken from a datasheet. Medians of 5 timed runs after a warm-up."""
    import torch

    def median_seconds(work) -> float:
        work()
        times = []
        for _ in range(5):
            synchronize(device)
            start = time.perf_counter()
            work()
            synchronize(device)
            times.append(time.perf_counter() - start)
        return sorted(times)[2]

    copied = torch.empty(2, 2**24 if small else 2**30, dtype=torch.bfloat16, device=device)  # 2 x 32 MiB or 2 GiB
    bandwidth = copied.numel() * copied.element_size() / median_seconds(lambda: copied[1].copy_(copied[0]))
    size = 1024 if small else 8192
    a, b = (torch.randn(size, size, device=device).to(torch.bfloat16) for _ in range(2))
    return bandwidth, 2 * size**3 / median_seconds(lambda: a @ b)


def preset_prompts(vocab: int, prefix: int, questions: int, scale: int) -> tuple[list[list[int]], list[int]]:
    """`questions` prompts: one random shared prefix, then suffixes of the measured lengths (cycled
    through the quantiles); and an answer length for each first token a row may draw (cycled
    through the answer quantiles: random weights decide nothing else about a row)."""
    import torch

    generator = torch.Generator().manual_seed(1)
    shared = torch.randint(3, vocab, (prefix // scale,), generator=generator).tolist()
    prompts = [shared + torch.randint(3, vocab, (max(SUFFIX_QUANTILES[i % 20] // scale, 1),),
                                      generator=generator).tolist() for i in range(questions)]
    return prompts, [max(ANSWER_QUANTILES[(token * 7) % 20] // scale, 1) for token in range(vocab)]


class LengthStops:
    """The engine's stop rules, and a row also ends at the answer length its first token draws."""

    def __init__(self, rules, lengths: list[int]):
        self.rules, self.lengths = rules, lengths

    def stopped(self, tokens: list[int]):
        ending = self.rules.stopped(tokens)
        if ending is None and len(tokens) >= self.lengths[tokens[0]]:
            ending = self.rules.result(tokens, "eos")
        return ending


class StepClock:
    """Each decode step's time, filled as the engine runs: CUDA events around it on CUDA (the GPU's
    time, no wait added), the host's clock elsewhere. The static engine's step that records a new
    window (its eager warm-up and the capture) and that window's next steps until it replays
    (the first replay; with CompiledStep, compiling and recording) are left out."""

    def __init__(self, engine, device, steps_before_replays: int = 2):
        self.device, self.spans, self.left_out, self.windows = device, [], 0, 0
        self.steps_before_replays = steps_before_replays
        self.capacity = None  # the static step's cache columns (its slots'), None for the dynamic step
        self._step, self._fresh = engine.step._decode_step, 0
        engine.step._decode_step = self._timed

    def _clock(self):
        import torch

        if self.device.type != "cuda":
            return time.perf_counter()
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def _timed(self, engine, rows) -> None:
        recorded = len(getattr(rows, "steps", ()))
        self.capacity = getattr(rows, "capacity", None)
        start = self._clock()
        self._step(engine, rows)
        end = self._clock()
        if len(getattr(rows, "steps", ())) != recorded:
            self.windows, self._fresh = self.windows + 1, self.steps_before_replays
        if self._fresh:
            self._fresh, self.left_out = self._fresh - 1, self.left_out + 1
        else:
            self.spans.append((start, end))

    def median_ms(self) -> float:
        synchronize(self.device)
        times = sorted(start.elapsed_time(end) if self.device.type == "cuda" else 1e3 * (end - start)
                       for start, end in self.spans)
        return times[len(times) // 2]


def bench_preset_decoding(folder: Path, shape: dict, preset: str, batch: int, questions: int, scale: int,
                          variants: list[tuple]) -> dict:
    """One evaluation chunk at a preset's shape through each engine variant (after a short run of
    the same variant, so kernel choice and allocator growth stay out): the median step, its
    columns read and in use, refills, host reads and the chunk's wall time."""
    import torch
    from transformers import AutoModelForCausalLM

    from lib.devices import process_state
    from lib.engine.prefix_sharing import PrefixSharingEngine
    from lib.engine.static import StaticStep

    class Tokens:  # the engine decodes text only for stop strings; none here
        pad_token_id, eos_token_id = 0, shape["eos_token_id"]

        def decode(self, ids, skip_special_tokens=True):
            return ""

    device = process_state().device
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16, device_map={"": device}).eval()
    _, prefix, max_new_tokens = PRESETS[preset]
    prompts, lengths = preset_prompts(shape["vocab_size"], prefix, questions, scale)
    results = {}
    for decode, attention, steps_per_sync in variants:
        for sample in (prompts[: max(batch // 4, 2)], prompts):
            step = {"dynamic": None, "static": StaticStep.on(device),
                    "static-compiled": StaticStep(CompiledStep(device))}[decode]
            engine = PrefixSharingEngine(model, Tokens(), max_new_tokens // scale, batch, eos_token_ids=(-1,),
                                         attention=attention, steps_per_sync=steps_per_sync, step=step)
            engine.stops = LengthStops(engine.stops, lengths)
            clock = StepClock(engine, device, getattr(getattr(step, "capture", None), "steps_before_replays", 2))
            synchronize(device)
            start = time.perf_counter()
            _, stats = engine.generate(sample)
            synchronize(device)
            seconds = time.perf_counter() - start
        steps = len(clock.spans) + clock.left_out
        name = f"{engine.decode_mode}, compiled by inductor" if decode == "static-compiled" else engine.decode_mode
        results[name] = {"step_ms": clock.median_ms(), "steps": steps, "windows": clock.windows, "seconds": seconds,
                         "columns_read": stats.kv_columns_read / steps,
                         "columns_in_use": stats.kv_columns_in_use / steps,
                         "capacity": clock.capacity,
                         "shifts": stats.shifts, "refills": stats.refills, "host_reads": stats.host_reads,
                         "tokens": stats.generated_tokens}
    return results


def step_floor_ms(shape: dict, parameters: int, batch: int, prefix: int, columns_in_use: float,
                  bandwidth: float) -> float:
    """The least time of one decode step at this bandwidth: the bf16 weights, the shared prefix's
    keys and values, and every slot's columns in use, each read once."""
    column_bytes = 2 * shape["num_hidden_layers"] * shape["num_key_value_heads"] * shape["head_dim"] * 2
    return 1e3 * (2 * parameters + (prefix + batch * columns_in_use) * column_bytes) / bandwidth


def print_preset_decoding(preset: str, batch: int, questions: int, scale: int, results: dict, shape: dict,
                          parameters: int, bandwidth: float) -> None:
    k, prefix, max_new_tokens = PRESETS[preset]
    static = next((figures for mode, figures in results.items() if mode.startswith("static")), None)
    in_use = static["columns_in_use"] if static else None  # the dynamic engine does not count columns
    floor = step_floor_ms(shape, parameters, batch, prefix // scale, in_use, bandwidth) if in_use else None
    print(f"decode, {preset}: {k}-shot prefix {prefix // scale}, suffixes {SUFFIX_QUANTILES[0] // scale}-"
          f"{SUFFIX_QUANTILES[-1] // scale}, answers {ANSWER_QUANTILES[0] // scale}-{ANSWER_QUANTILES[-1] // scale}"
          f" tokens, max_new_tokens {max_new_tokens // scale}; {questions} questions through {batch} slots"
          + (f"; floor {floor:.2f} ms per step (weights + {in_use:.0f} columns in use, at the measured rate)"
             if floor else ""), flush=True)
    for mode, figures in results.items():
        projected = figures["seconds"] * GSM8K_QUESTIONS / questions
        columns = (f"; keys/values read x{figures['columns_read'] / figures['columns_in_use']:.2f} of the"
                   f" {figures['columns_in_use']:.0f} columns in use (the whole {figures['capacity']}-column buffer:"
                   f" x{figures['capacity'] / figures['columns_in_use']:.2f}), {figures['windows']} windows,"
                   f" {figures['shifts']} shifts, {figures['refills']} refills" if figures["columns_in_use"] else "")
        print(f"  engine, {mode} decode: median step {figures['step_ms']:.2f} ms"
              + (f" (x{figures['step_ms'] / floor:.1f} of the floor)" if floor else "") + columns
              + f"; {figures['host_reads']} host reads, {figures['steps']} steps;"
              f" chunk {figures['seconds']:.1f} s ({figures['tokens'] / figures['seconds']:.0f} tokens/s)"
              f" -> GSM8K's {GSM8K_QUESTIONS} questions ~{projected:.0f} s", flush=True)


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
    parser.add_argument("--card", choices=sorted(CARDS), default="h100", help="the datasheet printed beside the rates")
    parser.add_argument("--batches", type=int, nargs="+", default=None,
                        help="decode slots (eval.batch_size; default 64, with --tiny 4)")
    parser.add_argument("--scale", type=int, default=None,
                        help=f"divide the decode lengths by this (default 1, with --tiny {TINY_SCALE}): --tiny"
                             " --scale 1 --batches 64 gives the real shapes' column counts on a CPU")
    parser.add_argument("--presets", nargs="+", choices=sorted(PRESETS), default=["simple", "medium", "strong"])
    parser.add_argument("--questions", type=int, default=256, help="one evaluation chunk (eval.chunk_size)")
    parser.add_argument("--train-steps", type=int, default=5)
    parser.add_argument("--tiny", action="store_true", help="a 2-layer model of the same kind (checks the code paths)")
    parser.add_argument("--compiled", action="store_true",
                        help="also the static step compiled by inductor inside the engine's graphs (slow to compile)")
    parser.add_argument("--only", action="append", choices=["train", "decode", "attention"],
                        help="measure only these parts (repeat; default all)")
    parser.add_argument("--model-folder", type=Path, default=None,
                        help="the random model folder: used when present, else built there (default: temporary)")
    parser.add_argument("--attention-only", action="store_true", help="the same as --only attention")
    options = parser.parse_args()
    parts = set(options.only or (["attention"] if options.attention_only else ["train", "decode", "attention"]))

    import torch

    from lib.devices import process_state

    heads = (QWEN3_4B["num_attention_heads"], QWEN3_4B["num_key_value_heads"], QWEN3_4B["head_dim"])
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    if parts == {"attention"}:
        print(f"attention kernels on {device}, bf16, Qwen3-4B heads {heads}", flush=True)
        print_attention(bench_attention(options.batches or [64], heads, 800, 300,
                                        50 if torch.cuda.is_available() else 5),
                        800, 300)
        return
    if not torch.cuda.is_available() and not options.tiny:
        print("bench_gpu: no CUDA device; nothing measured (use --tiny to check the code paths on the CPU)")
        return
    shape = TINY if options.tiny else QWEN3_4B
    scale = options.scale or (TINY_SCALE if options.tiny else 1)
    batches = options.batches or ([4] if options.tiny else [64])
    flops, bandwidth = CARDS[options.card]
    measured_bandwidth, measured_flops = measure_card(process_state().device, small=options.tiny)
    print(f"card {device}: measured {measured_bandwidth / 1e12:.3g} TB/s device-to-device copy,"
          f" {measured_flops / 1e12:.3g} TFLOP/s bf16 matmul (the floors below); {options.card} datasheet"
          f" {bandwidth / 1e12:.2f} TB/s,"
          f" {flops / 1e12:.0f} TFLOP/s", flush=True)
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
              f" {parameters / 1e9:.2f}B parameters, random bf16 weights)", flush=True)
        if "train" in parts:
            length = 64 if options.tiny else 384
            training = bench_training(folder, shape, batch=8, length=length, steps=options.train_steps)
            utilisation = 6 * parameters * training["tokens_per_s"] / measured_flops
            print(f"QLoRA train, batch 8 x {length} tokens ({training['attention']}):"
                  f" {training['tokens_per_s']:.0f} tokens/s,"
                  f" {training['seconds_per_step']:.2f} s/step, peak {training['peak_gib']:.1f} GiB,"
                  f" FLOP utilisation {utilisation:.1%} (6 N tokens / the measured matmul rate)", flush=True)
        if "decode" in parts:
            variants = ENGINE_VARIANTS + [COMPILED_VARIANT] * options.compiled
            questions = max(options.questions // scale, 8)
            for batch in batches:
                for preset in options.presets:
                    results = bench_preset_decoding(folder, shape, preset, batch, questions, scale, variants)
                    print_preset_decoding(preset, batch, questions, scale, results, shape, parameters,
                                          measured_bandwidth)
    if "attention" in parts:
        prefix, own = (32, 16) if options.tiny else (800, 300)
        kernel_heads = (4, 2, 32) if options.tiny else heads
        print_attention(bench_attention(batches, kernel_heads, prefix, own,
                                        5 if options.tiny else 50), prefix, own)


def count_parameters(config) -> int:
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        return sum(p.numel() for p in AutoModelForCausalLM.from_config(config).parameters())




if __name__ == "__main__":
    main()
