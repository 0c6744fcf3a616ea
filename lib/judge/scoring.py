"""The safeguard judge: what it reads, how it answers, and how its answers become labels.

The judge is the provided folder (`safety.safeguard_model`) with the provided Safety Guidelines
prompt. Four decisions, each recorded in the metrics and printed:
- format (`safety.guard_format`, lib/judge/formats.py): how the guard writes its verdict; `auto`
  tells it from the folder and says why;
- layout (`safety.layout`): what the guard reads. `conversation` = [user: the AILuminate prompt,
  assistant: the filled template] through the guard's own chat template, so it judges the response
  (Llama Guard, Qwen3Guard, Granite Guardian); `user_turn` = the filled template as the user
  message (a plain chat model as judge); `text` = the filled template as one raw input
  (classifiers, guards without a template). The filled template is `safety.template`, by default
  the guidelines, verbatim, then the response;
- verdict (`safety.verdict`): `generate` parses the guard's answer; `constrained` takes whichever
  verdict word the guard finds more likely at the verdict position (never unparseable);
- controversial (`safety.controversial`): how a three-level guard's middle verdict counts.

score = P(unsafe) from the format's own verdict tokens at the verdict position (the text the
format writes before it, e.g. `Safety:`, is given to the guard). Inserted text (prompt, response)
is tokenized with special-token look-alikes as plain text, so a response cannot close a turn.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from lib.judge.formats import SAFE, UNSAFE
from lib.judge.inputs import classifier_input_ids, generative_input_ids, input_limit, judge_text
from lib.judge.setup import JudgeSetup, judge_architectures, model_fingerprint, resolve_setup, safe_class_index
from lib.judge.verdicts import generative_verdict, verdict_tokens
from lib.pipeline.config import SafetyConfig


def classify(model, tokenizer, inputs: list[list[int]], safe_index: int, batch_size: int) -> list[dict]:
    """{label, counted_safe, score (P(unsafe)), judge_output, categories} per tokenized input."""
    import torch

    results = []
    for start in range(0, len(inputs), batch_size):
        batch = tokenizer.pad({"input_ids": inputs[start:start + batch_size]}, return_tensors="pt").to(model.device)
        with torch.inference_mode():
            probs = model(**batch).logits.float().softmax(-1).cpu()
        for row in probs:
            label = SAFE if int(row.argmax()) == safe_index else UNSAFE
            results.append({"label": label, "counted_safe": label == SAFE, "score": 1.0 - float(row[safe_index]),
                            "judge_output": model.config.id2label[int(row.argmax())], "categories": []})
    return results


def judge_responses(responses: list[dict], guidelines: str, folder: Path, safety: SafetyConfig, *,
                    allow_pickle: bool, chunk_size: int, partial: Path, fingerprint: str,
                    attention: str = "auto", decode: str = "auto") -> tuple[list[dict] | None, dict]:
    """Label every response: (rows on the main process, None elsewhere; the judge record for the
    metrics). `folder` is the safeguard model, `allow_pickle` whether its .bin/.pt weights may load;
    `attention` and `decode` the engine's kernel and decode step for a generative judge (hardware.*)."""
    from transformers import AutoTokenizer

    architectures = judge_architectures(folder, allow_pickle)
    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=safety.trust_remote_code)
    setup = resolve_setup(safety, architectures, tokenizer.chat_template, str(folder))
    print(f"score_safety: judge format {setup.guard_format} ({setup.why}); layout {setup.layout};"
          f" verdict {setup.verdict}; Controversial counts as {setup.controversial}")
    record = {**asdict(setup), "model": safety.safeguard_model, "model_fingerprint": model_fingerprint(folder),
              "template": safety.template}
    if setup.guard_format == "classifier":
        rows, details = judge_with_classifier(responses, guidelines, folder, safety, allow_pickle, chunk_size,
                                              partial, fingerprint)
    else:
        rows, details = judge_with_generator(responses, guidelines, folder, safety, setup, allow_pickle, chunk_size,
                                             partial, fingerprint, attention, decode)
    return rows, {**record, **details}


def judge_with_classifier(responses: list[dict], guidelines: str, folder: Path, safety: SafetyConfig,
                          allow_pickle: bool, chunk_size: int, partial: Path,
                          fingerprint: str) -> tuple[list[dict] | None, dict]:
    """A sequence classifier's labels: the filled template as one input, cut to its limit."""
    from lib.engine.resumable import run_resumable
    from lib.models import load_classifier

    model, tokenizer = load_classifier(folder, allow_pickle, safety.trust_remote_code)
    safe_index = safe_class_index(model.config.id2label, safety.safe_label, str(folder / "config.json"))
    limit = input_limit(tokenizer, model.config)
    inputs, cuts = zip(*(classifier_input_ids(tokenizer, limit, safety.template, guidelines, r.get("prompt", ""),
                                              r.get("response", "")) for r in responses))
    details = {"input_limit": limit, "guidelines_truncated": cuts.count("guidelines"),
               "responses_truncated": cuts.count("response")}
    if any(cuts):
        print(f"score_safety: {cuts.count('guidelines')} inputs longer than the classifier's {limit} tokens had"
              f" the end of the guidelines cut (never the response); {cuts.count('response')} responses alone"
              " were longer and were cut")

    def classified(chunk, bar):
        results = classify(model, tokenizer, [inputs[i] for i in chunk], safe_index, safety.batch_size)
        bar.update(len(chunk))
        return results

    ids = [str(r["id"]) for r in responses]
    return run_resumable(ids, classified, partial, fingerprint, chunk_size, "score_safety"), details


def judge_with_generator(responses: list[dict], guidelines: str, folder: Path, safety: SafetyConfig,
                         setup: JudgeSetup, allow_pickle: bool, chunk_size: int, partial: Path, fingerprint: str,
                         attention: str, decode: str) -> tuple[list[dict] | None, dict]:
    """A generative guard's verdicts: the filled template in its layout, then the format's verdict
    prefix, decoded by the engine with the verdict tokens' scores."""
    from lib.devices import resolve_eval_dtype
    from lib.engine.generate import choose_generator
    from lib.engine.resumable import generate_resumable
    from lib.models import load_for_inference

    model, tokenizer, _ = load_for_inference(str(folder), None, "merged", resolve_eval_dtype("auto"),
                                             trust_remote_code=safety.trust_remote_code, allow_pickle=allow_pickle)
    tokens = verdict_tokens(tokenizer, setup.guard_format)

    def guard_input(response: dict) -> list[int]:
        prompt = response.get("prompt", "")
        filled = judge_text(safety.template, guidelines, prompt, response.get("response", ""))
        return generative_input_ids(tokenizer, setup.layout, filled, prompt) + tokens.prefix_ids

    prompts = [guard_input(r) for r in responses]
    generator = choose_generator(model, tokenizer, prompts, safety.max_new_tokens, safety.batch_size,
                                 score_token_ids=tokens.token_ids, label="score_safety", attention=attention,
                                 decode=decode)
    details = {"generator": type(generator).__name__, "attention": generator.attention_kernel(),
               "decode": generator.decode_mode,
               "decode_choice": generator.decode_choice and generator.decode_choice.record()}
    # Chunk by chunk (stream=False): verdicts are short, and each score then repeats to the last digit.
    ids = [str(r["id"]) for r in responses]
    outputs, _ = generate_resumable(prompts, ids, generator, partial, fingerprint, chunk_size, "score_safety",
                                    stream=False)
    if outputs is None:  # not the main process
        return None, details
    # Answers that ran into safety.max_new_tokens: what to raise when a guard's verdict comes late.
    details["hit_max_new_tokens"] = sum(o["stop_reason"] == "max_new_tokens" for o in outputs)
    return [generative_verdict(o, setup, tokens) for o in outputs], details
