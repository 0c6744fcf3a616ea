"""Rejection sampling throughput: engine sampling (one seed per sample) vs one-by-one `generate(do_sample=True)`.

    make bench
    .venv/bin/python tests/bench/bench_refine.py [--questions 64] [--samples 4] [--batch 64] [--baseline-samples 32]

64 GSM8K train questions (the real train split when ../shared/data/gsm8k exists, else the demo
set; the few-shot pool left out), 4 samples each at temperature 0.7 with the simple preset's
3-shot prompt, the embedded SmolLM2-135M-Instruct in fp32 on CPU. Prints generated tokens/s of
both and their ratio (goal >= 5), and the yield of the filter (lib/training/refine.py) on the engine's samples.
The one-by-one baseline runs on the first --baseline-samples samples only (it is slow).
"""

from __future__ import annotations

import argparse
import time

from common import embedded_model_path, gsm8k_file


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--questions", type=int, default=64)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--k", type=int, default=3)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--baseline-samples", type=int, default=32)
    options = parser.parse_args()

    import torch
    from tqdm.auto import tqdm
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lib.engine.prefix_sharing import PrefixSharingEngine
    from lib.engine.sampling import Sampling
    from lib.tasks.data import load_gsm8k
    from lib.tasks.fewshot import draw_pool, remove_pool
    from lib.tasks.prompts import gsm8k_messages
    from lib.training.refine import sample_seed, select_all

    train_file, real = gsm8k_file("train")
    train = load_gsm8k(str(train_file), "train")
    pool = draw_pool(train, 8, seed=42)
    problems = remove_pool(train, pool)[0][: options.questions]
    exemplars = pool[: options.k]

    path = embedded_model_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    prompt_of = {p["id"]: tokenizer.apply_chat_template(gsm8k_messages(p["question"], exemplars, None, True),
                                                        add_generation_prompt=True, return_dict=True)["input_ids"]
                 for p in problems}
    prompts = [prompt_of[p["id"]] for p in problems for _ in range(options.samples)]
    seeds = [sample_seed(1234, p["id"], j) for p in problems for j in range(options.samples)]

    engine = PrefixSharingEngine(model, tokenizer, options.max_new_tokens, options.batch,
                                 sampling=Sampling(options.temperature))
    with tqdm(total=len(prompts), desc=f"engine sampling, batch {options.batch}") as bar:
        outputs, stats = engine.generate(prompts, progress=bar, seeds=seeds)
    engine_tps = stats.generated_tokens / stats.seconds

    count = min(options.baseline_samples, len(prompts))
    baseline_tokens, start = 0, time.perf_counter()
    for index, prompt in enumerate(tqdm(prompts[:count], desc="one-by-one generate(do_sample=True)")):
        torch.manual_seed(seeds[index])
        with torch.inference_mode():
            out = model.generate(torch.tensor([prompt]), max_new_tokens=options.max_new_tokens, do_sample=True,
                                 temperature=options.temperature, top_p=1.0, top_k=0,
                                 pad_token_id=tokenizer.pad_token_id)
        generated = out[0, len(prompt):].tolist()
        baseline_tokens += len(generated) - (1 if generated and generated[-1] in engine.eos else 0)
    baseline_tps = baseline_tokens / (time.perf_counter() - start)

    rows, metrics = select_all(problems, [vars(o) for o in outputs], options.samples, options.samples, True, True)
    print(f"refine benchmark: {len(problems)} GSM8K train questions ({'real' if real else 'demo'} data) x"
          f" {options.samples} samples, {options.k}-shot prompts, temperature {options.temperature},"
          f" SmolLM2-135M fp32 on CPU, max_new_tokens {options.max_new_tokens}")
    print(f"one-by-one generate(do_sample=True): {baseline_tps:7.1f} generated tokens/s ({count} samples)")
    print(f"engine sampling, batch {options.batch}:      {engine_tps:7.1f} generated tokens/s"
          f" -> x{engine_tps / baseline_tps:.2f} (goal >= 5); {stats.generated_tokens} tokens in {stats.seconds:.0f} s")
    print(f"yield: {metrics['questions_with_a_correct_sample']}/{metrics['questions']} questions with a correct sample,"
          f" {metrics['kept_samples']} samples kept ({metrics['kept_per_question_mean']:.2f} per question),"
          f" histogram {metrics['kept_per_question_histogram']}, rejected {metrics['rejected']}")


if __name__ == "__main__":
    main()
