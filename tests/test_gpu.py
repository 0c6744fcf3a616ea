"""On CUDA only (`pytest -m gpu`; skipped elsewhere): the engine against one-by-one `generate` in bf16,
with each attention kernel and each decode step (the static one replayed as a CUDA graph), and the
host waiting for the device once per block of decode steps.

In bf16 a batched run and a single-sequence run round differently, so tokens may part where the
top two logits are within a few bf16 steps of each other. The checks: parsed answers equal on at
least 97% of the prompts, and every first divergence at such a near-tie.
"""

import warnings

import pytest
import torch

from lib.engine.attention import PROBE_HEADS, probe_fused
from lib.engine.decode_choice import DecodeChooser
from lib.engine.near_ties import near_tie
from lib.engine.prefix_sharing import PrefixSharingEngine
from lib.engine.static import StaticStep
from lib.tasks.gsm8k import strict_answer
from lib.tasks.prompts import gsm8k_messages
from tests.helpers import make_problems, tiny_random_qwen3


def _engine(decode: str, *args, **options) -> PrefixSharingEngine:
    """The engine with the decode step `decode` names: the static one replayed as CUDA graphs."""
    step = StaticStep.on(torch.device("cuda")) if decode == "static" else None
    return PrefixSharingEngine(*args, step=step, **options)

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def _prompts(tokenizer, count: int) -> list[list[int]]:
    exemplars = make_problems(3, start=500)
    return [tokenizer.apply_chat_template(gsm8k_messages(p["question"], exemplars, None, True),
                                          add_generation_prompt=True, return_dict=True)["input_ids"]
            for p in make_problems(count)]


def _engine_against_generate(model, tokenizer, prompts, max_new_tokens: int = 48, attention: str = "auto",
                             decode: str = "dynamic"):
    engine = _engine(decode, model, tokenizer, max_new_tokens, batch_size=8, attention=attention)
    results, _ = engine.generate(prompts)
    assert engine.decode_mode == {"dynamic": "dynamic", "static": "static-cuda-graph"}[decode]
    agree, unexplained = 0, []
    for number, (prompt, result) in enumerate(zip(prompts, results)):
        with torch.inference_mode():
            out = model.generate(torch.tensor([prompt], device=model.device), max_new_tokens=max_new_tokens,
                                 do_sample=False, pad_token_id=tokenizer.pad_token_id, output_scores=True,
                                 return_dict_in_generate=True)
        expected = out.sequences[0, len(prompt):].tolist()
        if expected and expected[-1] in engine.eos:
            expected = expected[:-1]
        text = tokenizer.decode(expected, skip_special_tokens=True)
        agree += strict_answer(text) == strict_answer(result.text)
        for step, (want, got) in enumerate(zip(expected, result.token_ids)):
            if want != got:
                tie, gap = near_tie(out.scores[step][0], want, got, model.dtype)
                if not tie:
                    unexplained.append((number, step, gap))
                break
    return agree, unexplained


@pytest.fixture(scope="module")
def smollm2_bf16(smollm2_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.bfloat16).cuda().eval()


QWEN3_4B_HEADS = (32, 8, 128)  # query heads, key/value heads, head dim: they decide which kernels the op can use


@pytest.mark.parametrize("heads", [PROBE_HEADS, QWEN3_4B_HEADS], ids=["small", "qwen3-4b"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=["bf16", "fp32"])
def test_fused_kernel_runs_on_cuda_and_agrees_with_the_eager_one(heads, dtype):
    assert probe_fused(torch.device("cuda"), dtype, heads) is None


@pytest.mark.parametrize(("attention", "decode"), [("eager", "dynamic"), ("fused", "dynamic"), ("fused", "static")])
def test_engine_matches_generate_in_bf16_on_the_embedded_model(smollm2_bf16, smollm2_tokenizer, attention, decode):
    prompts = _prompts(smollm2_tokenizer, 16)  # through 8 slots: refills and the drain, 16 generate calls
    agree, unexplained = _engine_against_generate(smollm2_bf16, smollm2_tokenizer, prompts, attention=attention,
                                                  decode=decode)
    assert agree >= 0.97 * len(prompts) and not unexplained, (agree, unexplained)


def test_auto_replays_the_static_step_on_cuda_after_its_probe(smollm2_bf16, smollm2_tokenizer, capsys):
    choice = DecodeChooser(smollm2_bf16, smollm2_tokenizer, "t").choose("auto", _prompts(smollm2_tokenizer, 3))
    assert choice.step == "static", choice
    assert "t: hardware.decode auto -> static (replayed as a CUDA graph" in capsys.readouterr().out


def _host_waits(model, tokenizer, prompts, steps_per_sync: int, new_tokens: int, decode: str = "dynamic") -> int:
    """Synchronizing CUDA calls of one engine run in which every row decodes all new_tokens (no EOS)."""
    engine = _engine(decode, model, tokenizer, new_tokens, len(prompts), eos_token_ids=(-1,),
                     steps_per_sync=steps_per_sync)
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            engine.generate(prompts)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message).lower() for w in caught)


@pytest.fixture(scope="module")
def tiny_qwen3_bf16(smollm2_tokenizer):
    """A 2-layer Qwen3 with random weights in bf16 on CUDA: the target's architecture, any machine's files."""
    return tiny_random_qwen3(smollm2_tokenizer, hidden_size=128, head_dim=32, max_positions=2048).to(
        device="cuda", dtype=torch.bfloat16)


@pytest.mark.parametrize("decode", ["dynamic", "static"])
def test_the_host_waits_for_the_device_per_block_not_per_step(tiny_qwen3_bf16, smollm2_tokenizer, decode):
    prompts = _prompts(smollm2_tokenizer, 16)  # no EOS: the weights decide nothing here, only the step count

    def waits_per_extra_step(steps_per_sync):  # the prefills' waits cancel out
        return (_host_waits(tiny_qwen3_bf16, smollm2_tokenizer, prompts, steps_per_sync, 96, decode)
                - _host_waits(tiny_qwen3_bf16, smollm2_tokenizer, prompts, steps_per_sync, 32, decode)) / 64

    stepwise, blocked = waits_per_extra_step(1), waits_per_extra_step(8)
    assert stepwise >= 1, "the sync debug mode saw no per-step read: the check would prove nothing"
    assert blocked <= stepwise / 4, (stepwise, blocked)  # one token copy (and one compaction check) per 8 steps


def test_static_refills_make_the_host_wait_only_for_the_blocks_tokens(tiny_qwen3_bf16, smollm2_tokenizer):
    """The synchronizing CUDA calls of static runs (PyTorch's sync debug mode), 24 prompts with rows
    of 10 to 40 tokens: through 24 slots (no refill) and through 8 (refills). The calls a run makes
    once (its prefix, its cache) cancel out; what the refills add must be only the engine's counted
    reads, one per block. A pageable copy of a prefill's ids, or a read of its first tokens, would
    add one per refill."""
    prompts = _prompts(smollm2_tokenizer, 24)

    def waits(slots: int) -> tuple[int, object]:
        engine = _engine("static", tiny_qwen3_bf16, smollm2_tokenizer, 40, slots, eos_token_ids=(-1,))

        def stopped(tokens):  # random weights: a row ends after 10-40 tokens, as its first token says
            return engine.stops.result(tokens, "max_new_tokens") if len(tokens) >= 10 + tokens[0] % 31 else None

        engine.stops.stopped = stopped
        engine.generate(prompts)  # the captures' one-time work (workspaces, pinned blocks) outside the count
        torch.cuda.set_sync_debug_mode("warn")
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                _, stats = engine.generate(prompts)
        finally:
            torch.cuda.set_sync_debug_mode("default")
        return sum("synchroniz" in str(w.message).lower() for w in caught), stats

    (alone, alone_stats), (refilled, stats) = waits(24), waits(8)
    assert alone_stats.refills == 0 and stats.refills >= 2
    assert refilled - alone == stats.host_reads - alone_stats.host_reads, (alone, refilled, stats, alone_stats)


def test_engine_matches_generate_in_bf16_on_a_tiny_random_qwen3(tiny_qwen3_bf16, smollm2_tokenizer):
    prompts = _prompts(smollm2_tokenizer, 32)
    for decode in ("dynamic", "static"):
        agree, unexplained = _engine_against_generate(tiny_qwen3_bf16, smollm2_tokenizer, prompts, max_new_tokens=24,
                                                      decode=decode)
        assert agree >= 0.97 * len(prompts) and not unexplained, (decode, agree, unexplained)


def test_qlora_packed_rows_train_through_pytorchs_variable_length_kernel_as_through_one_call_per_example(
        smollm2_tokenizer, tmp_path, monkeypatch):
    """The train stage's path on CUDA: a tiny Qwen3 loaded as an nf4 base (norms kept in fp32 by peft),
    LoRA, bf16 autocast, packed rows. torch's varlen_attn must run in every layer (q, k and v cast to
    bf16 on the way), and the loss and LoRA gradients equal those of one causal SDPA call per example
    (the fallback path), each within bf16 rounding of its largest value."""
    import lib.training.packed_attention as packed
    from lib.models import load_base_for_training
    from lib.training.trainer import attach_lora

    probe = torch.zeros(1, 1, 1, 32, device="cuda", dtype=torch.bfloat16)
    if packed._varlen_kernel(probe, 0.0) is None:
        pytest.skip(f"torch {torch.__version__} has no torch.nn.attention.varlen: the per-example path runs")
    tiny_random_qwen3(smollm2_tokenizer, hidden_size=128, head_dim=32).save_pretrained(tmp_path)
    model = load_base_for_training(str(tmp_path), "nf4", True, torch.bfloat16, gradient_checkpointing=True)
    model, _ = attach_lora(model, r=8, alpha=16, dropout=0.0, target_modules=None)
    model.train()
    with torch.no_grad():  # LoRA B starts at zero; values make its gradients depend on the attention
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.02)
    attention = packed.set_training_attention(model, "padding_free", torch.device("cuda"))
    lengths = (70, 40, 90, 55)
    ids = torch.randint(5, 1000, (1, sum(lengths)), generator=torch.Generator().manual_seed(0)).cuda()
    positions = torch.cat([torch.arange(n) for n in lengths])[None].cuda()
    starts = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32).cuda()  # as collated
    varlen_calls = []
    varlen = packed._varlen
    monkeypatch.setattr(packed, "_varlen", lambda *args: varlen_calls.append(args[0].dtype) or varlen(*args))

    def loss_and_grads():
        model.zero_grad()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(input_ids=ids, position_ids=positions, cu_seq_lens_q=starts, cu_seq_lens_k=starts,
                         max_length_q=max(lengths), max_length_k=max(lengths), labels=ids, use_cache=False).loss
        loss.backward()
        return loss.detach().float(), [p.grad.float().clone() for p in model.parameters() if p.grad is not None]

    through_varlen = loss_and_grads()
    if attention == packed.PACKED_ATTENTION:  # flash-attn installed: transformers' own varlen path ran instead
        assert varlen_calls == [torch.bfloat16] * 4, varlen_calls  # 2 layers, recomputed in the backward pass
    monkeypatch.setattr(packed, "_varlen_kernel", lambda query, dropout: None)
    per_example = loss_and_grads()
    unit = torch.finfo(torch.bfloat16).eps
    torch.testing.assert_close(through_varlen[0], per_example[0], rtol=4 * unit, atol=0)
    for mine, theirs in zip(through_varlen[1], per_example[1]):
        torch.testing.assert_close(mine, theirs, rtol=0, atol=8 * unit * float(theirs.abs().max()))


def test_sampling_draws_without_waiting_for_the_device():
    from lib.engine.sampling import draw

    probs = torch.softmax(torch.randn(64, 1000, device="cuda"), -1)
    generators = [torch.Generator(device="cuda").manual_seed(seed) for seed in range(64)]
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")  # any device-to-host read raises
    try:
        tokens = draw(probs, generators)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert tokens.shape == (64,) and tokens.device.type == "cuda"
