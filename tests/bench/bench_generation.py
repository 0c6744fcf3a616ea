"""Generation throughput: the prefix-sharing, slot-refilling engine vs one-by-one `model.generate`.

    make bench
    .venv/bin/python tests/bench/bench_generation.py [--questions 64] [--k 5] [--batch 16 64] [--max-new-tokens 256]

The same k-shot GSM8K prompts (real test questions and a pool drawn from the real train split
when ../shared/data/gsm8k exists, else the demo set), the embedded SmolLM2-135M-Instruct on CPU (fp32
unless --dtype bfloat16), greedy decoding, the engine with each shared-prefix attention kernel
(eager matmul; fused calls merged by log-sum-exp). Prints generated tokens/s of each, their
ratio to one-by-one generate, whether the parsed answers agree, prefill positions computed per
question, and the share of computed positions wasted on padding or on sequences that had already stopped.
"""

from __future__ import annotations

import argparse
import time

from common import embedded_model_path, gsm8k_file


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--questions", type=int, default=64)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--batch", type=int, nargs="+", default=[16, 64], help="engine batch sizes to measure")
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--attention", nargs="+", choices=["eager", "fused"], default=["eager", "fused"],
                        help="shared-prefix attention kernels to measure")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32",
                        help="model dtype for both (bf16 is fast on CPUs with AMX, but not bit-exact)")
    parser.add_argument("--baseline-questions", type=int, default=None,
                        help="run the slow one-by-one baseline on the first N only (default: all)")
    options = parser.parse_args()

    import torch
    from tqdm.auto import tqdm
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lib.engine.prefix_sharing import PrefixSharingEngine
    from lib.tasks.data import load_gsm8k
    from lib.tasks.fewshot import draw_pool
    from lib.tasks.gsm8k import strict_answer
    from lib.tasks.prompts import gsm8k_messages

    torch.manual_seed(0)
    test_file, real = gsm8k_file("test")
    train = load_gsm8k(str(gsm8k_file("train")[0]), "train")
    test = load_gsm8k(str(test_file), "test")
    questions = [test[i % len(test)] for i in range(options.questions)]
    exemplars = draw_pool(train, 8, seed=42)[: options.k]

    path = embedded_model_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, options.dtype)).eval()
    prompts = [tokenizer.apply_chat_template(gsm8k_messages(q["question"], exemplars, None, True),
                                             add_generation_prompt=True, return_dict=True)["input_ids"]
               for q in questions]

    runs = {}
    for batch in options.batch:
        for attention in options.attention:
            engine = PrefixSharingEngine(model, tokenizer, options.max_new_tokens, batch, attention=attention)
            with tqdm(total=len(prompts), desc=f"engine, batch {batch}, {attention}") as bar:
                runs[batch, attention] = engine.generate(prompts, progress=bar)

    count = options.baseline_questions or len(prompts)
    baseline_tokens, baseline_answers, start = 0, [], time.perf_counter()
    for prompt in tqdm(prompts[:count], desc="one-by-one generate"):
        with torch.inference_mode():
            out = model.generate(torch.tensor([prompt]), max_new_tokens=options.max_new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id)
        generated = out[0, len(prompt):].tolist()
        if generated and generated[-1] in engine.eos:
            generated = generated[:-1]
        baseline_tokens += len(generated)
        baseline_answers.append(strict_answer(tokenizer.decode(generated, skip_special_tokens=True)))
    baseline_tps = baseline_tokens / (time.perf_counter() - start)

    results = next(iter(runs.values()))[0]
    looped = sum(r.stop_reason == "max_new_tokens" for r in results)
    prompt_len = sum(map(len, prompts)) / len(prompts)
    print(f"generation benchmark: {len(prompts)} GSM8K questions ({'real' if real else 'demo'} data), {options.k}-shot"
          f" prompts of {prompt_len:.0f} tokens on average, SmolLM2-135M {options.dtype} on CPU,"
          f" max_new_tokens {options.max_new_tokens} ({looped} answers hit it)")
    print(f"one-by-one generate:  {baseline_tps:7.1f} generated tokens/s ({count} questions)")
    for (batch, attention), (results, stats) in runs.items():
        engine_tps = stats.generated_tokens / stats.seconds
        agree = sum(a == strict_answer(r.text) for a, r in zip(baseline_answers, results))
        print(f"engine, batch {batch:<3} {attention:<5} {engine_tps:7.1f} generated tokens/s"
              f" -> x{engine_tps / baseline_tps:.2f}"
              f" (goal >= 6); parsed answers identical {agree}/{count};"
              f" prefill positions per question {stats.prefill_tokens_per_prompt():.0f} (one-by-one {prompt_len:.0f},"
              f" shared prefix of {stats.prefix_tokens} counted once); wasted positions {stats.wasted_share():.1%}"
              f" (padding {stats.prefill_padding}, after stop {stats.decode_wasted}; goal <= 20%)")
    for batch in options.batch:
        if ("eager", "fused") == tuple(options.attention[:2]):
            eager, fused = runs[batch, "eager"][0], runs[batch, "fused"][0]
            same = sum(e.token_ids == f.token_ids for e, f in zip(eager, fused))
            print(f"batch {batch}: fused kernel's tokens identical to the eager kernel's on {same}/{len(eager)}"
                  " questions")


if __name__ == "__main__":
    main()
