"""What each `eval.model_format` costs and what it evaluates: load time, decode speed, distance to the trained model.

    make bench
    .venv/bin/python tests/bench/bench_model_formats.py [--adapter artifacts/run_demo/adapter] [--model PATH]

An adapter (the given one, else a random LoRA r=8 on every projection, B scaled small like a
trained one) on the embedded SmolLM2-135M-Instruct (or --model), loaded as each format with the
toolkit's loader on this process's device and dtypes (fp32 on CPU; nf4 quantized in the compute
dtype training would use). Prints, side by side: load seconds and their ratio to
`merged_original` (the cost of quantizing as in training and dequantizing), greedy decode
tokens/s for a batch of demo questions and its ratio to `nf4`, and the largest next-token logit
difference to `nf4` (the trained model: adapter beside the 4-bit base).

Then `merged` against `nf4` in fp32 and in bf16 compute (training's quantization and the evaluation in
that dtype), the demo's trained adapter when artifacts/run_demo/adapter exists: the largest next-token
logit difference relative to the logits' scale, same next token, and same parsed answer after greedy
decoding of the questions (docs/stages.md quotes this table).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from common import DEMO_GSM8K, REPO, embedded_model_path

FORMATS = ("merged_original", "merged", "nf4")


def random_adapter(model_path: str, folder: Path) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(model_path),
                           LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", init_lora_weights=False))
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.mul_(0.05)
    model.save_pretrained(folder)
    return folder


def agreement(model_path: str, adapter: Path, batch, tokenizer, compute_dtype, max_new_tokens: int) -> dict:
    """`merged` against `nf4`, both from a base quantized in `compute_dtype` and evaluated in it."""
    import torch

    from lib.models import TrainedBase, load_for_inference
    from lib.tasks.gsm8k import strict_answer

    trained = TrainedBase("nf4", double_quant=True, compute_dtype=compute_dtype)
    outputs = {}
    for model_format in ("merged", "nf4"):
        model = load_for_inference(model_path, adapter, model_format, compute_dtype, trained)[0]
        with torch.no_grad():
            logits = model(**batch).logits[:, -1].float().cpu()
            out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id)
        texts = tokenizer.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
        outputs[model_format] = (logits, texts)
        del model
    (merged_logits, merged_texts), (nf4_logits, nf4_texts) = outputs["merged"], outputs["nf4"]
    return {"relative": float((merged_logits - nf4_logits).abs().max() / nf4_logits.abs().max()),
            "same_token": int((merged_logits.argmax(-1) == nf4_logits.argmax(-1)).sum()),
            "same_answer": sum(strict_answer(a) == strict_answer(b) for a, b in zip(merged_texts, nf4_texts)),
            "same_text": sum(a == b for a, b in zip(merged_texts, nf4_texts)), "count": len(merged_texts)}


def print_agreement(model_path: str, adapter: Path, batch, tokenizer, max_new_tokens: int) -> None:
    import torch

    from lib.devices import process_state

    dtypes = [torch.float32, torch.bfloat16]
    print(f"merged vs nf4, adapter {adapter}, {max_new_tokens} new tokens:")
    print(f"{'compute':9} {'max |dlogit| / max |logit|':>27} {'same next token':>16} {'same parsed answer':>19}"
          f" {'same output':>12}")
    for dtype in dtypes:
        if dtype == torch.bfloat16 and process_state().device.type == "cuda" and not torch.cuda.is_bf16_supported():
            continue
        row = agreement(model_path, adapter, batch, tokenizer, dtype, max_new_tokens)
        n = row["count"]
        print(f"{str(dtype).removeprefix('torch.'):9} {row['relative']:27.2e} {row['same_token']:>12}/{n}"
              f" {row['same_answer']:>15}/{n} {row['same_text']:>8}/{n}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="base model folder (default: the embedded SmolLM2)")
    parser.add_argument("--adapter", type=Path, default=None, help="adapter folder (default: a random one)")
    parser.add_argument("--questions", type=int, default=16, help="the demo's test questions first, then training ones")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--agreement-tokens", type=int, default=128, help="new tokens for the agreement table")
    options = parser.parse_args()

    import torch
    from transformers import AutoTokenizer

    from lib.devices import process_state, resolve_eval_dtype
    from lib.models import TrainedBase, load_for_inference
    from lib.pipeline.config import QuantConfig

    model_path = options.model or embedded_model_path()
    device = process_state().device
    dtype, trained = resolve_eval_dtype("auto"), TrainedBase.from_quant(QuantConfig())
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    tokenizer.padding_side = "left"
    # The demo's 8 test questions, then its training ones: the table compares formats, not accuracy, and
    # its figures were measured on 16 questions.
    lines = [line for name in ("gsm8k_test.jsonl", "gsm8k_train.jsonl")
             for line in (DEMO_GSM8K / name).read_text().splitlines()]
    questions = [json.loads(line)["question"] for line in lines[:options.questions]]
    demo_adapter = REPO / "artifacts" / "run_demo" / "adapter"
    if options.adapter is None and options.model is None and (demo_adapter / "adapter_config.json").is_file():
        options.adapter = demo_adapter
    texts = [tokenizer.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True, tokenize=False)
             for q in questions]
    batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)

    with tempfile.TemporaryDirectory() as scratch:
        adapter = options.adapter or random_adapter(model_path, Path(scratch) / "adapter")
        print(f"model {model_path}, adapter {options.adapter or 'random (r=8, all projections)'}, device {device},"
              f" eval {str(dtype).removeprefix('torch.')}, nf4 quantized in"
              f" {str(trained.compute_dtype).removeprefix('torch.')}; {len(questions)} questions x"
              f" {options.max_new_tokens} new tokens")
        results = {}
        for model_format in FORMATS:
            start = time.perf_counter()
            model, _, precision = load_for_inference(model_path, adapter, model_format, dtype, trained)
            load_seconds = time.perf_counter() - start
            with torch.no_grad():
                logits = model(**batch).logits[:, -1].float()
                model.generate(**batch, max_new_tokens=2, do_sample=False, pad_token_id=tokenizer.pad_token_id)
                start = time.perf_counter()
                out = model.generate(**batch, max_new_tokens=options.max_new_tokens,
                                     min_new_tokens=options.max_new_tokens,
                                     do_sample=False, pad_token_id=tokenizer.pad_token_id)
                decode_seconds = time.perf_counter() - start
            tokens = (out.shape[1] - batch["input_ids"].shape[1]) * out.shape[0]
            results[model_format] = (precision, load_seconds, tokens / decode_seconds, logits.cpu())
            del model
        print_formats(results)
        print_agreement(model_path, adapter, batch, tokenizer, options.agreement_tokens)


def print_formats(results: dict) -> None:
    reference_load, trained_speed, trained_logits = (results["merged_original"][1], results["nf4"][2],
                                                     results["nf4"][3])
    print(f"{'format':16} {'base precision':16} {'load s':>7} {'x original':>10} {'tokens/s':>9} {'x nf4':>6}"
          f" {'max |dlogit| vs nf4':>20} {'same next token':>15}")
    for model_format, (precision, load_seconds, speed, logits) in results.items():
        difference = float((logits - trained_logits).abs().max())
        same = int((logits.argmax(-1) == trained_logits.argmax(-1)).sum())
        print(f"{model_format:16} {precision:16} {load_seconds:7.2f} {load_seconds / reference_load:10.2f}"
              f" {speed:9.1f} {speed / trained_speed:6.2f} {difference:20.2e} {same:>9}/{len(logits)}")


if __name__ == "__main__":
    main()
