"""What a CUDA graph of the static decode step needs, checked on the CPU, and `hardware.decode: auto`.

A graph records the step once and replays it: the step must read nothing back to the host and
depend on no Python value that changes between steps. torch.compile's tracer checks both on the
CPU: with fullgraph=True a host read or data-dependent branch is an error, and with dynamic=False
any Python value the step depends on is guarded, so a changed value traces the step again. One trace
for a whole call (refills, freed slots and a left shift of the columns included) is one graph that
replays every step, and every tensor the step touches must keep its address across the call (a
graph replays the addresses it recorded). Models in fp32 on the CPU."""

import math

import pytest
import torch

import lib.engine.static as static
from lib.engine.decode_choice import DecodeChooser, probe_static
from lib.engine.dynamic import DynamicStep
from lib.engine.generate import choose_generator
from lib.engine.near_ties import NEAR_TIE_ULPS, near_tie
from lib.engine.prefix_sharing import PrefixSharingEngine
from lib.engine.static import StaticStep
from lib.errors import InputError
from tests.helpers import count_shifts, engine_prompts, static_engine, tiny_random_qwen3


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()


def addresses(rows) -> list[int]:
    """Where every tensor the step reads or writes lives: a graph replays these addresses."""
    layers = rows.cache.layers
    tensors = [rows.mask, rows.positions, rows.last, *(t for layer in layers
                                                        for t in (layer.keys, layer.values, layer.cumulative_length))]
    return [tensor.data_ptr() for tensor in tensors]


class Tracer:
    """A capture by torch.compile's tracer: counts the graphs it traces, runs each eagerly, and
    counts the replays that found a tensor of the step moved since the capture (the tracer would
    read the new one; a CUDA graph would keep writing the old)."""

    def __init__(self):
        self.traces = 0
        self.moved = 0
        self.windows = []  # the window of each capture

    def backend(self, graph_module, example_inputs):
        self.traces += 1
        return graph_module.forward

    def __call__(self, body):
        rows, captured = body.args[1], addresses(body.args[1])
        self.windows.append(body.args[2])
        traced = torch.compile(body, backend=self.backend, fullgraph=True, dynamic=False)

        def replay():
            self.moved += addresses(rows) != captured
            return traced()

        return replay


def traced_run(model, tokenizer, prompts, monkeypatch, max_new_tokens: int = 6):
    """(tokens of the dynamic engine, tokens of the static one with a traced step, its tracer, shifts)."""
    torch._dynamo.reset()
    shifts = count_shifts(monkeypatch)
    tracer = Tracer()
    options = dict(max_new_tokens=max_new_tokens, batch_size=2, eos_token_ids=(-1,))
    dynamic, _ = PrefixSharingEngine(model, tokenizer, **options).generate(prompts, in_order=True)
    traced, _ = static_engine(model, tokenizer, capture=tracer, **options).generate(prompts, in_order=True)
    return [r.token_ids for r in dynamic], [r.token_ids for r in traced], tracer, len(shifts)


@pytest.fixture(scope="module")
def tiny_qwen3(smollm2_tokenizer):
    """The target model's architecture (q/k norms, its rotary embedding), 2 random layers."""
    return tiny_random_qwen3(smollm2_tokenizer)


@pytest.mark.parametrize("architecture", ["llama", "qwen3"])
def test_one_traced_step_serves_a_whole_call(architecture, request, smollm2_tokenizer, monkeypatch):
    model = request.getfixturevalue({"llama": "tiny", "qwen3": "tiny_qwen3"}[architecture])
    prompts = engine_prompts(smollm2_tokenizer, 15)  # 16 prompts through 2 slots: refills and a shift
    dynamic, traced, tracer, shifts = traced_run(model, smollm2_tokenizer, prompts, monkeypatch)
    assert shifts >= 1
    # fullgraph: no host read; one trace per window: no Python value the replays would freeze
    assert tracer.traces == len(tracer.windows) == len(set(tracer.windows)) >= 2
    assert tracer.moved == 0  # refills, retirements and shifts wrote in place
    assert traced == dynamic


def test_a_step_that_reads_the_host_column_is_traced_again(tiny, smollm2_tokenizer, monkeypatch):
    """The check has teeth: the eager step once marked its column by the host's `rows.col`, which a
    graph would freeze at the captured column."""
    body = static.step_body

    def host_column_body(model, rows, window):
        rows.mask[:, rows.col] = 1
        return body(model, rows, window)

    monkeypatch.setattr(static, "step_body", host_column_body)
    prompts = engine_prompts(smollm2_tokenizer, 1)  # 2 prompts, 5 tokens: a warm-up step and 3 traced ones
    _, _, tracer, _ = traced_run(tiny, smollm2_tokenizer, prompts, monkeypatch, max_new_tokens=5)
    assert len(tracer.windows) == 1 and tracer.traces == 3  # one capture, traced again at each column


def test_a_shift_that_reallocates_the_mask_is_seen(tiny, smollm2_tokenizer, monkeypatch):
    """The address check has teeth: a shift that builds a new mask (as the dynamic engine grows its
    own) leaves a graph writing the old one."""
    shift = StaticStep._shift

    def reallocating_shift(self, rows, by):
        shift(self, rows, by)
        rows.mask = rows.mask.clone()

    monkeypatch.setattr(StaticStep, "_shift", reallocating_shift)
    _, _, tracer, shifts = traced_run(tiny, smollm2_tokenizer, engine_prompts(smollm2_tokenizer, 15), monkeypatch)
    assert shifts >= 1 and tracer.moved >= 1


def test_the_probe_passes_a_faithful_capture_and_names_a_broken_one(tiny, smollm2_tokenizer, monkeypatch):
    prompts = engine_prompts(smollm2_tokenizer, 3)
    assert probe_static(tiny, smollm2_tokenizer, prompts) == (None, 0.0)  # eager replays: the same step

    def refused(body):
        raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(static, "capture_for", lambda device: refused)
    assert probe_static(tiny, smollm2_tokenizer, prompts)[0] == (
        "RuntimeError: operation not permitted when stream is capturing")

    def wrong(body):  # replays that answer token 7 whatever the logits
        return lambda: torch.nn.functional.one_hot(body().argmax(-1) * 0 + 7, tiny.config.vocab_size).float()

    monkeypatch.setattr(static, "capture_for", lambda device: wrong)
    failure, gap = probe_static(tiny, smollm2_tokenizer, prompts)
    assert failure.startswith("prompt 0: tokens [") and gap > NEAR_TIE_ULPS


def test_static_asked_for_says_in_one_line_that_its_step_could_not_be_captured(tiny, smollm2_tokenizer):
    def refused(body):
        raise RuntimeError("operation not permitted when stream is capturing\nmore detail")

    engine = static_engine(tiny, smollm2_tokenizer, 4, 2, capture=refused)
    with pytest.raises(InputError) as caught:
        engine.generate(engine_prompts(smollm2_tokenizer, 1))
    assert str(caught.value) == ("hardware.decode=static: the decode step could not be captured (RuntimeError:"
                                 " operation not permitted when stream is capturing); set hardware.decode=dynamic")


def test_under_auto_a_step_that_cannot_be_captured_runs_eagerly_and_says_so_once(tiny, smollm2_tokenizer, capsys):
    def refused(body):
        raise RuntimeError("operation not permitted when stream is capturing\nmore detail")

    prompts = engine_prompts(smollm2_tokenizer, 3)
    engine = static_engine(tiny, smollm2_tokenizer, 4, 2, capture=refused, fallback=True)
    results, _ = engine.generate(prompts)
    expected, _ = PrefixSharingEngine(tiny, smollm2_tokenizer, 4, 2).generate(prompts)
    assert [r.token_ids for r in results] == [r.token_ids for r in expected] and engine.decode_mode == "static"
    assert capsys.readouterr().out.splitlines() == [
        "hardware.decode auto: the decode step could not be captured (RuntimeError: operation not permitted when"
        " stream is capturing); running the static step eagerly (the same tokens, without the graph's speed)"]


def test_the_probe_runs_at_the_calls_slot_count_and_cache_capacity(tiny, smollm2_tokenizer, monkeypatch):
    shapes, empty = [], static.empty_slots

    def spied(like, slot_count, capacity, *others):
        shapes.append((slot_count, capacity))
        return empty(like, slot_count, capacity, *others)

    monkeypatch.setattr(static, "empty_slots", spied)
    prompts = engine_prompts(smollm2_tokenizer, 7)
    assert probe_static(tiny, smollm2_tokenizer, prompts, slots=5, max_new_tokens=300)[0] is None
    ((slots, capacity),) = shapes
    assert slots == 5 and capacity >= 300  # 6 prompts through 5 slots: one refill, the call's cache


def test_a_difference_at_a_rounding_tie_of_the_two_likeliest_tokens_is_not_a_failure():
    logits = torch.tensor([1.0, 8.0, 8.0625, -3.0], dtype=torch.bfloat16)  # 8 and one bf16 ulp (2^-4) above
    assert near_tie(logits, 1, 2) == (True, 1.0) and near_tie(logits, 2, 1) == (True, 1.0)
    assert near_tie(torch.tensor([1.0, 8.0, 8.25, -3.0], dtype=torch.bfloat16), 1, 2) == (True, 4.0)  # the limit
    assert near_tie(torch.tensor([1.0, 8.0, 8.3125, -3.0], dtype=torch.bfloat16), 1, 2) == (False, 5.0)
    assert near_tie(logits, 1, 0) == (False, math.inf)  # not the two likeliest
    assert not near_tie(logits.float() + torch.tensor([0, 0, 1e-3, 0]), 1, 2)[0]  # fp32 rounds far finer
    assert near_tie(logits.float(), 1, 2, torch.bfloat16)[0]  # fp32 logits of a bf16 model: the model's ulps


def test_auto_is_dynamic_off_cuda_and_says_so_once(tiny, smollm2_tokenizer, capsys):
    prompts = engine_prompts(smollm2_tokenizer, 1)
    chooser = DecodeChooser(tiny, smollm2_tokenizer, "t")  # the caller's, for this model: asked twice for auto
    steps = {decode: type(choose_generator(tiny, smollm2_tokenizer, prompts, 4, 2, label="t", decode=decode,
                                           chooser=chooser).step) for decode in ("auto", "dynamic", "static", "auto")}
    assert steps == {"auto": DynamicStep, "dynamic": DynamicStep, "static": StaticStep}
    assert capsys.readouterr().out.count("t: hardware.decode auto -> dynamic (no CUDA graphs off CUDA") == 1
    assert chooser.choose("static").step == "static"
    engine = choose_generator(tiny, smollm2_tokenizer, prompts, 4, 2, decode="static")
    assert engine.decode_mode == "static" and engine.step.capture is None  # eager on the CPU
    assert engine.decode_choice.record() == {"asked": "static", "step": "static", "why": "as hardware.decode says",
                                             "probe_gap_ulps": None}
