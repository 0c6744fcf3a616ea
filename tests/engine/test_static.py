"""The static-shape decode step (hardware.decode: static) gives the dynamic engine's answers in fp32
on the CPU, scenario by scenario: refills, stop strings, blocks, max_new_tokens, a refill that ends at
its first token, seeded sampling, first-token scores, streamed chunks, and the left shift of a long
stream. Same tokens, texts, stop reasons and scores, and the same useful decode positions."""

import pytest
import torch

from lib.engine.dynamic import DynamicStep
from lib.engine.prefix_sharing import PrefixSharingEngine
from lib.engine.sampling import Sampling
from lib.engine.static import StaticStep
from tests.helpers import count_shifts, engine_prompts, static_engine, tiny_random_qwen3


@pytest.fixture(scope="module")
def smollm2(smollm2_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32).eval()


def both(model, tokenizer, prompts, *args, seeds=None, in_order=False, **options):
    """(dynamic, static) results and stats of the same call."""
    return [engine(model, tokenizer, *args, **options).generate(prompts, seeds=seeds, in_order=in_order)
            for engine in (PrefixSharingEngine, static_engine)]


def assert_same(dynamic, static):
    (expected, expected_stats), (results, stats) = dynamic, static
    assert [(r.token_ids, r.text, r.stop_reason, r.first_token_probs) for r in results] == [
        (r.token_ids, r.text, r.stop_reason, r.first_token_probs) for r in expected]
    assert stats.generated_tokens == expected_stats.generated_tokens
    # Free slots are computed and ignored: wasted, not useful, positions.
    useful = stats.decode_positions - stats.decode_wasted
    assert useful == expected_stats.decode_positions - expected_stats.decode_wasted


SLOW = pytest.mark.slow  # the scenarios beyond refills, stops and sampling run in `make test-slow`


@pytest.mark.parametrize("options", [
    {"max_new_tokens": 24, "batch_size": 3},  # 6 prompts: refills
    {"max_new_tokens": 24, "batch_size": 3, "stop_strings": ("apples",)},
    pytest.param({"max_new_tokens": 24, "batch_size": 3, "stop_strings": ("apples",), "steps_per_sync": 5},
                 marks=SLOW),
    pytest.param({"max_new_tokens": 3, "batch_size": 4}, marks=SLOW),
    pytest.param({"max_new_tokens": 12, "batch_size": 2, "score_token_ids": (28, 1241)}, marks=SLOW),
], ids=["refills", "stop strings", "blocks of 5", "max_new_tokens", "first-token scores"])
def test_static_gives_the_dynamic_answers(smollm2, smollm2_tokenizer, options):
    prompts = engine_prompts(smollm2_tokenizer, 5)
    assert_same(*both(smollm2, smollm2_tokenizer, prompts, **options))


def test_static_samples_the_dynamic_draws_with_the_same_seeds(smollm2, smollm2_tokenizer):
    prompts = engine_prompts(smollm2_tokenizer, 5)
    seeds = [11 * i for i in range(len(prompts))]
    assert_same(*both(smollm2, smollm2_tokenizer, prompts, 16, 3, sampling=Sampling(0.8, 0.95), seeds=seeds))


@SLOW
def test_a_refill_that_ends_at_its_first_token_frees_its_slot(smollm2, smollm2_tokenizer):
    prompts = engine_prompts(smollm2_tokenizer, 3)
    free, _ = PrefixSharingEngine(smollm2, smollm2_tokenizer, max_new_tokens=6, batch_size=1).generate(prompts)
    ends = (smollm2_tokenizer.eos_token_id, free[2].token_ids[0])
    dynamic, static = both(smollm2, smollm2_tokenizer, prompts, 6, 1, eos_token_ids=ends)
    assert_same(dynamic, static)
    assert static[0][2].token_ids == [] and static[0][2].stop_reason == "eos"


def test_a_long_stream_shifts_its_columns_and_keeps_the_answers(smollm2, smollm2_tokenizer, monkeypatch):
    shifts = count_shifts(monkeypatch)
    prompts = engine_prompts(smollm2_tokenizer, 9)  # 10 prompts of <= 6 new tokens through one slot: the columns
    assert_same(*both(smollm2, smollm2_tokenizer, prompts, 6, 1, in_order=True))  # run out at least once
    assert len(shifts) >= 1


# Ops that read a device value back to the host, or copy host data (a Python list used as an index)
# to it: on CUDA each one makes the host wait for the queued work. Seen on the CPU by the profiler.
HOST_OPS = {"aten::lift_fresh", "aten::_local_scalar_dense", "aten::item", "aten::nonzero", "aten::is_nonzero"}


def test_a_sampled_static_step_reads_nothing_from_the_host_through_refills_retires_and_shifts(
        smollm2_tokenizer, monkeypatch):
    from torch.profiler import ProfilerActivity, profile

    shifts = count_shifts(monkeypatch)
    step, seen = StaticStep._decode_step, []

    def traced(self, engine, slots):
        with profile(activities=[ProfilerActivity.CPU]) as trace:
            step(self, engine, slots)
        seen.append({event.name for event in trace.events()})

    monkeypatch.setattr(StaticStep, "_decode_step", traced)
    prompts = engine_prompts(smollm2_tokenizer, 7)  # 8 prompts through 2 slots: refills, retires, shifts
    engine = static_engine(tiny_random_qwen3(smollm2_tokenizer), smollm2_tokenizer, 6, 2,
                           sampling=Sampling(0.8, 0.95))
    results, _ = engine.generate(prompts, seeds=list(range(len(prompts))), in_order=True)
    assert len(results) == len(prompts) and len(shifts) >= 1 and len(seen) > 10
    assert [sorted(ops & HOST_OPS) for ops in seen if ops & HOST_OPS] == []
    assert all("aten::argmax" in ops for ops in seen)  # the trace saw each step's work


@SLOW
def test_the_static_engine_streams_chunks_like_the_dynamic_one(smollm2, smollm2_tokenizer, tmp_path):
    from lib.engine.resumable import generate_resumable

    prompts = engine_prompts(smollm2_tokenizer, 5)
    ids = [f"q{i}" for i in range(len(prompts))]
    outputs = [generate_resumable(prompts, ids, engine(smollm2, smollm2_tokenizer, 12, 4), tmp_path / name, "f", 2,
                                  "test")[0] for name, engine in (("d", PrefixSharingEngine), ("s", static_engine))]
    assert outputs[0] == outputs[1]


def test_refills_wait_for_a_share_of_free_slots_and_change_no_answer(smollm2_tokenizer, monkeypatch):
    from lib.engine import static

    model = tiny_random_qwen3(smollm2_tokenizer)  # sampled, ending at any of a tenth of the vocabulary
    prompts = engine_prompts(smollm2_tokenizer, 23)  # 24 prompts through 16 slots: 8 to refill
    options = dict(sampling=Sampling(1.0, 1.0), eos_token_ids=tuple(range(0, len(smollm2_tokenizer), 10)))
    seeds = list(range(len(prompts)))
    expected, _ = PrefixSharingEngine(model, smollm2_tokenizer, 24, 16, **options).generate(prompts, seeds=seeds)
    assert len({len(r.token_ids) for r in expected}) >= 5  # rows end at many lengths
    refills = {}
    for share in (1000, 2):  # a refill as soon as one slot is free; only when half of them are
        monkeypatch.setattr(static, "REFILL_SHARE", share)
        results, stats = static_engine(model, smollm2_tokenizer, 24, 16, **options).generate(prompts, seeds=seeds)
        assert [r.token_ids for r in results] == [r.token_ids for r in expected]
        refills[share] = stats.refills
    assert refills[2] == 1 < refills[1000], refills  # the 8 newcomers in one prefill


def test_a_step_reads_at_most_a_quarter_more_key_value_columns_than_its_rows_use(smollm2_tokenizer, monkeypatch):
    """Columns read: the key length of each step's attention over the rows' own cache, as the
    profiler records the op's inputs; columns in use: from the oldest live row's first real token
    (read from the mask) to the column the step writes. Rows that stop at different lengths leave
    dead columns behind the oldest rows, which the engine must move out of its steps' windows. A
    tiny random Qwen3, sampled, whose rows end at any of a tenth of the vocabulary: answers of many
    lengths up to 40 tokens."""
    from torch.profiler import ProfilerActivity, profile

    from lib.engine.slots import READ_BOUND, window_for

    step, steps = StaticStep._decode_step, []

    def measured(self, engine, rows):
        live = [slot for slot, item in enumerate(rows.items) if item is not None]
        in_use = rows.col + 1 - min(int(rows.mask[slot].nonzero()[0]) for slot in live)
        with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as trace:
            step(self, engine, rows)
        own_keys = [event.input_shapes[1] for event in trace.events() if "dot_product" in event.name
                    and event.input_shapes and event.input_shapes[1] and event.input_shapes[1][0] == len(rows.items)]
        assert len({tuple(shape) for shape in own_keys}) == 1  # every layer reads the same window
        steps.append((own_keys[0][2], in_use, rows.capacity))

    monkeypatch.setattr(StaticStep, "_decode_step", measured)
    model = tiny_random_qwen3(smollm2_tokenizer)
    prompts = engine_prompts(smollm2_tokenizer, 23)  # 24 prompts through 4 slots
    options = dict(max_new_tokens=40, batch_size=4, eos_token_ids=tuple(range(0, len(smollm2_tokenizer), 10)),
                   sampling=Sampling(1.0, 1.0))
    seeds = list(range(len(prompts)))
    expected, _ = PrefixSharingEngine(model, smollm2_tokenizer, **options).generate(prompts, seeds=seeds)
    results, stats = static_engine(model, smollm2_tokenizer, **options).generate(prompts, seeds=seeds)
    assert [r.token_ids for r in results] == [r.token_ids for r in expected]
    assert len({len(r.token_ids) for r in results}) >= 5  # rows of many lengths
    smallest = window_for(1, steps[0][2])
    assert all(in_use <= read <= max(READ_BOUND * in_use, smallest) for read, in_use, _ in steps), steps
    assert stats.shifts >= 1 and len({read for read, _, _ in steps}) >= 2  # the bound was kept by moving columns
    assert stats.kv_columns_read == sum(read for read, _, _ in steps)  # what the metrics say
    assert stats.kv_columns_in_use == sum(in_use for _, in_use, _ in steps)


def test_refills_read_nothing_back_the_host_reads_once_per_block(smollm2_tokenizer, monkeypatch):
    """The engines read the device through one counted function (lib/engine/outputs.read_back): the
    static engine reads a prefill's first tokens with the next block's, so a call reads once per
    block; the dynamic engine also reads at every prefill (its refills and drops depend on them)."""
    blocks = []
    for step in (StaticStep, DynamicStep):
        block = step.decode_block
        monkeypatch.setattr(step, "decode_block", lambda self, *args, block=block: blocks.append(1) or block(
            self, *args))
    model = tiny_random_qwen3(smollm2_tokenizer)  # sampled, ending at any of a tenth of the vocabulary
    prompts = engine_prompts(smollm2_tokenizer, 11)  # 12 prompts through 3 slots: refills
    options = dict(max_new_tokens=24, batch_size=3, steps_per_sync=4, sampling=Sampling(1.0, 1.0),
                   eos_token_ids=tuple(range(0, len(smollm2_tokenizer), 10)))
    seeds = list(range(len(prompts)))
    dynamic, dynamic_stats = PrefixSharingEngine(model, smollm2_tokenizer, **options).generate(prompts, seeds=seeds)
    dynamic_blocks, blocks[:] = len(blocks), []
    static, stats = static_engine(model, smollm2_tokenizer, **options).generate(prompts, seeds=seeds)
    assert [r.token_ids for r in static] == [r.token_ids for r in dynamic]
    assert stats.refills >= 2 and stats.host_reads == len(blocks)
    assert dynamic_stats.host_reads > dynamic_blocks  # the contrast: a read per prefill too
