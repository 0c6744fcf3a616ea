"""The fallback generator for attention the engine does not reproduce (sliding windows, soft-capping):
the same tokens as one-by-one `generate`, and stop strings."""

import pytest
import torch


@pytest.mark.parametrize("architecture, window", [("gemma2", 64), ("mistral", 16), ("mistral", 4096)])
def test_generation_equals_one_by_one_generate_with_sliding_windows_and_soft_capping(smollm2_tokenizer, architecture,
                                                                                      window):
    from transformers import Gemma2Config, Gemma2ForCausalLM, MistralConfig, MistralForCausalLM

    from lib.engine.generate import choose_generator
    from lib.engine.plain_generate import BatchedGenerate
    from lib.engine.prefix_sharing import PrefixSharingEngine

    torch.manual_seed(0)
    common = dict(vocab_size=len(smollm2_tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, head_dim=16, sliding_window=window,
                  eos_token_id=smollm2_tokenizer.eos_token_id, pad_token_id=smollm2_tokenizer.pad_token_id)
    model = (Gemma2ForCausalLM(Gemma2Config(**common)) if architecture == "gemma2"
             else MistralForCausalLM(MistralConfig(**common))).eval()
    texts = ["You are a careful assistant. " * 4 + question for question in
             ("What is 2 + 2?", "Name a colour.", "Why is the sky blue?", "Count to three.", "Say hi.", "Spell cat.",
              "Hm?")]
    prompts = [smollm2_tokenizer.apply_chat_template([{"role": "user", "content": t}], add_generation_prompt=True,
                                                     return_dict=True)["input_ids"] for t in texts]
    generator = choose_generator(model, smollm2_tokenizer, prompts, max_new_tokens=12, batch_size=3)
    expected_kind = PrefixSharingEngine if (architecture, window) == ("mistral", 4096) else BatchedGenerate
    assert type(generator) is expected_kind
    results, _ = generator.generate(prompts)
    for prompt, result in zip(prompts, results):
        with torch.inference_mode():
            out = model.generate(torch.tensor([prompt]), max_new_tokens=12, do_sample=False,
                                 pad_token_id=smollm2_tokenizer.pad_token_id, output_scores=True,
                                 return_dict_in_generate=True)
        expected = out.sequences[0, len(prompt):].tolist()
        if expected and expected[-1] in generator.eos:
            expected = expected[:-1]
        if result.token_ids != expected:  # only at a float near-tie of the reference's top two tokens
            step = next(i for i, (a, b) in enumerate(zip(result.token_ids, expected)) if a != b)
            top2 = out.scores[step][0].topk(2).values
            assert float(top2[0] - top2[1]) < 1e-4, f"diverged at step {step} without a near-tie"


def test_the_fallback_ends_a_row_at_a_stop_string_even_when_its_pad_is_an_eos(smollm2_tokenizer):
    """SmolLM2's pad token is its <|im_end|>: rows a stop string ended are padded with an EOS id."""
    from transformers import MistralConfig, MistralForCausalLM

    from lib.engine.plain_generate import BatchedGenerate

    torch.manual_seed(0)
    model = MistralForCausalLM(MistralConfig(vocab_size=len(smollm2_tokenizer), hidden_size=64, intermediate_size=128,
                                             num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                             head_dim=16, sliding_window=8, pad_token_id=smollm2_tokenizer.pad_token_id,
                                             eos_token_id=smollm2_tokenizer.eos_token_id)).eval()
    prompts = [smollm2_tokenizer(text)["input_ids"] for text in ("Hello there", "A longer prompt than the other one")]
    free, _ = BatchedGenerate(model, smollm2_tokenizer, 12, 2).generate(prompts)
    stop = free[0].text[3:6]
    assert stop.strip()
    stopped, _ = BatchedGenerate(model, smollm2_tokenizer, 12, 2, stop_strings=(stop,)).generate(prompts)
    assert stopped[0].stop_reason == "stop_string" and stop not in stopped[0].text
    assert free[0].text.startswith(stopped[0].text)
