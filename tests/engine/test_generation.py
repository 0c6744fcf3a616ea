"""The batched engine against one-by-one `model.generate` on the embedded model in fp32."""

import pytest
import torch

from lib.engine.prefix_sharing import PrefixSharingEngine, common_prefix_length
from tests.helpers import engine_prompts


@pytest.fixture(scope="module")
def smollm2(smollm2_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32).eval()


def _one_by_one(model, tokenizer, prompt, max_new_tokens):
    with torch.inference_mode():
        out = model.generate(torch.tensor([prompt]), max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id, output_scores=True, return_dict_in_generate=True)
    tokens = out.sequences[0, len(prompt):].tolist()
    return tokens, out.scores


@pytest.mark.parametrize("attention", ["eager", "fused"])
def test_engine_matches_one_by_one_generate(smollm2, smollm2_tokenizer, attention):
    prompts = engine_prompts(smollm2_tokenizer, 5)
    engine = PrefixSharingEngine(smollm2, smollm2_tokenizer, max_new_tokens=24, batch_size=3,  # 6 prompts: refills
                                 attention=attention)
    results, stats = engine.generate(prompts)
    for prompt, result in zip(prompts, results):
        expected, scores = _one_by_one(smollm2, smollm2_tokenizer, prompt, 24)
        if expected and expected[-1] in engine.eos:
            expected = expected[:-1]
        if result.token_ids != expected:
            # Only acceptable where the reference itself had a float near-tie between its top two tokens.
            step = next(i for i, (a, b) in enumerate(zip(result.token_ids, expected)) if a != b)
            top2 = scores[step][0].topk(2).values
            assert float(top2[0] - top2[1]) < 1e-4, f"engine diverged at step {step} without a near-tie"
    assert stats.decode_wasted == 0 and stats.prompts == 6
    assert stats.prefix_tokens == common_prefix_length(prompts) > 0
    assert stats.prefill_tokens_per_prompt() < sum(map(len, prompts)) / len(prompts)


def test_decode_blocks_give_the_same_results_and_count_what_they_waste(smollm2, smollm2_tokenizer, monkeypatch):
    prompts = engine_prompts(smollm2_tokenizer, 5)
    stop = "apples"  # ends most answers mid-block, on a token the host must find inside the block
    stepwise, stepwise_stats = PrefixSharingEngine(smollm2, smollm2_tokenizer, 24, 3,
                                                   stop_strings=(stop,)).generate(prompts)
    engine = PrefixSharingEngine(smollm2, smollm2_tokenizer, 24, 3, stop_strings=(stop,), steps_per_sync=5)
    calls = {"decode_block": 0, "_decode_step": 0}
    for name in calls:  # the engine's decode step, counted on this engine's own step object
        original = getattr(engine.step, name)

        def counted(*args, _original=original, _name=name):
            calls[_name] += 1
            return _original(*args)
        monkeypatch.setattr(engine.step, name, counted)

    blocked, stats = engine.generate(prompts)

    assert [(r.token_ids, r.text, r.stop_reason) for r in blocked] == [
        (r.token_ids, r.text, r.stop_reason) for r in stepwise]
    assert {r.stop_reason for r in blocked} >= {"stop_string"}
    assert calls["_decode_step"] >= 3 * calls["decode_block"]  # host reads once per block, not per step
    assert stepwise_stats.decode_wasted == 0 < stats.decode_wasted
    assert stats.decode_positions - stats.decode_wasted == stepwise_stats.decode_positions


def test_stop_strings_end_a_sequence_and_cut_the_text(smollm2, smollm2_tokenizer):
    prompts = engine_prompts(smollm2_tokenizer, 2)
    free, _ = PrefixSharingEngine(smollm2, smollm2_tokenizer, max_new_tokens=24, batch_size=2).generate(prompts)
    stop = free[0].text[4:8]
    assert stop.strip()
    stopped, _ = PrefixSharingEngine(smollm2, smollm2_tokenizer, max_new_tokens=24, batch_size=2,
                                     stop_strings=(stop,)).generate(prompts)
    assert stopped[0].stop_reason == "stop_string" and stop not in stopped[0].text
    assert free[0].text.startswith(stopped[0].text)
    assert len(stopped[0].token_ids) < len(free[0].token_ids)


def test_max_new_tokens_bounds_every_output(smollm2, smollm2_tokenizer):
    results, _ = PrefixSharingEngine(smollm2, smollm2_tokenizer, max_new_tokens=3, batch_size=4).generate(
        engine_prompts(smollm2_tokenizer, 3))
    assert all(len(r.token_ids) <= 3 for r in results)
    assert any(r.stop_reason == "max_new_tokens" for r in results)


def test_common_prefix_leaves_every_prompt_a_token():
    assert common_prefix_length([[1, 2, 3], [1, 2, 4], [1, 2, 3, 5]]) == 2
    assert common_prefix_length([[1, 2], [1, 2]]) == 1
    assert common_prefix_length([[5, 6], [7]]) == 0


def test_a_refilled_prompt_that_stops_at_its_first_token_is_not_decoded_further(smollm2, smollm2_tokenizer):
    prompts = engine_prompts(smollm2_tokenizer, 3)
    free, _ = PrefixSharingEngine(smollm2, smollm2_tokenizer, max_new_tokens=6, batch_size=1).generate(prompts)
    first = free[2].token_ids[0]
    # Batch of 1: later prompts enter by refilling a slot; make the third one's first token an end.
    engine = PrefixSharingEngine(smollm2, smollm2_tokenizer, max_new_tokens=6, batch_size=1,
                                 eos_token_ids=(smollm2_tokenizer.eos_token_id, first))
    results, _ = engine.generate(prompts)
    assert results[2].token_ids == [] and results[2].stop_reason == "eos"


def test_streamed_chunks_share_one_engine_call_and_give_the_chunk_by_chunk_answers(smollm2, smollm2_tokenizer,
                                                                                    tmp_path):
    """Chunks do not drain the batch: all of a process's chunks go to the engine as one stream."""
    from lib.engine.resumable import generate_resumable

    prompts = engine_prompts(smollm2_tokenizer, 5)
    ids = [f"q{i}" for i in range(len(prompts))]
    engine = PrefixSharingEngine(smollm2, smollm2_tokenizer, max_new_tokens=12, batch_size=4)
    calls, generate = [], engine.generate
    engine.generate = lambda batch, **options: calls.append(len(batch)) or generate(batch, **options)

    streamed, _ = generate_resumable(prompts, ids, engine, tmp_path / "streamed", "f", 2, "test")
    assert calls == [6]  # three chunks of 2, one engine call: the next chunk refills freed slots
    chunked, _ = generate_resumable(prompts, ids, engine, tmp_path / "chunked", "f", 2, "test", stream=False)
    assert calls == [6, 2, 2, 2]
    assert [o["token_ids"] for o in streamed] == [o["token_ids"] for o in chunked]
    # Written a whole chunk at a time: each chunk's two ids stand together in the partial file.
    written = [line.split('"id": "')[1].split('"')[0]
               for line in (tmp_path / "streamed" / "outputs.rank0.jsonl").read_text().splitlines()]
    assert sorted(written) == ids and {frozenset(written[i:i + 2]) for i in (0, 2, 4)} == {
        frozenset(ids[i:i + 2]) for i in (0, 2, 4)}


def test_draw_follows_the_row_distribution_goodness_of_fit():
    """20,000 draws on a 5-token vocabulary (one token impossible) against the expected counts:
    Pearson's chi-square with 3 degrees of freedom stays below 16.27 (p = 0.001) for the right
    distribution; drawing in proportion to p^2 or uniformly among the possible ones lands far above."""
    from lib.engine.sampling import draw

    probs = torch.tensor([0.5, 0.25, 0.15, 0.1, 0.0])
    rows = 200
    generators = [torch.Generator().manual_seed(1000 + row) for row in range(rows)]
    counts = torch.zeros(5)
    for _ in range(100):
        tokens = draw(probs.expand(rows, -1), generators)
        counts += torch.bincount(tokens, minlength=5)
    assert counts[4] == 0  # a zero-probability token is never drawn
    expected = probs[:4] * counts.sum()
    chi_square = float(((counts[:4] - expected) ** 2 / expected).sum())
    assert chi_square < 16.27, (counts.tolist(), chi_square)


def test_draw_repeats_for_the_same_seeds_and_a_row_ignores_its_neighbours():
    from lib.engine.sampling import draw

    probs = torch.softmax(torch.randn(4, 50, generator=torch.Generator().manual_seed(0)), -1)

    def tokens(rows, seeds):
        return draw(probs[rows], [torch.Generator().manual_seed(seed) for seed in seeds]).tolist()

    assert tokens([0, 1, 2, 3], [7, 8, 9, 10]) == tokens([0, 1, 2, 3], [7, 8, 9, 10])
    assert tokens([2], [9]) == tokens([0, 1, 2, 3], [7, 8, 9, 10])[2:3]  # alone or in a batch: the same draw
