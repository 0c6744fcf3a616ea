"""Host work per decode step: the ATen ops (≈ kernel launches on a GPU) one engine decode step issues.

    make bench
    .venv/bin/python tests/bench/bench_decode_ops.py [--layers 2 4] [--batch 8]

On a GPU a decode step of Qwen3-4B is bound by the host when it issues thousands of small
kernels: each costs ~8-12 us to launch, while the card needs ~4 ms for the step's weights and
cache at batch 64. This counts, with the torch profiler on the CPU, the ATen ops that do device
work themselves (views, queries and allocations left out; a composite op counts once, as its
innermost compute op) inside each engine decode step of a random Qwen3-shaped model at two
depths, splits them into a per-layer and a fixed part, and projects Qwen3-4B's 36 layers. A third
line counts the static step replayed as a graph: what it issues outside the graph, plus the one
replay (here a stand-in that issues no op). A fourth counts the kernels of the static step compiled
by inductor (tests/bench/common.CompiledStep: norms, rotary and the attention merge fused), which
on CUDA would be recorded inside the graph: fewer kernels replayed, each costing the GPU ~2-3 us
whether or not the host launches it. Counts are of the code, not of the CPU's speed (CUDA's
dispatch may differ by an op or two, and inductor fuses for Triton as it does for C++ here); each
is the median over a call's steps (a window's first steps run eagerly, compile and record).
"""

from __future__ import annotations

import argparse

from common import CompiledStep, embedded_model_path

QWEN3_4B_LAYERS = 36
LAUNCH_US = (8, 12)  # host time per kernel launch, a typical range for eager PyTorch on CUDA


def tiny_qwen3(tokenizer, layers: int):
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(0)
    config = Qwen3Config(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=1024,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    return Qwen3ForCausalLM(config).eval()


# ATen ops that only describe a tensor (views, dtype queries, allocation): no kernel on a GPU.
METADATA_OPS = {"aten::" + name for name in (
    "as_strided", "view", "_unsafe_view", "_reshape_alias", "reshape", "resolve_conj", "resolve_neg", "result_type",
    "empty", "empty_strided", "empty_like", "alias", "t", "transpose", "permute", "expand", "slice", "select",
    "unsqueeze", "squeeze", "detach", "contiguous", "to", "_to_copy_view", "lift_fresh", "resize_", "size", "stride",
    "is_nonzero", "item", "_local_scalar_dense", "split", "chunk", "narrow", "unbind", "flatten", "view_as")}


def launches_a_kernel(event) -> bool:
    """An ATen op that does device work itself: not a view or query, and no such op below it
    (matmul -> mm counts once, as mm); or a kernel inductor generated (cpp_fused_..., triton_...)."""
    if "cpp_fused_" in event.name or event.name.startswith("triton_"):
        return True
    if not event.name.startswith("aten::") or event.name in METADATA_OPS:
        return False
    pending = list(event.cpu_children)
    while pending:
        child = pending.pop()
        if child.name.startswith("aten::") and child.name not in METADATA_OPS:
            return False
        pending += child.cpu_children
    return True


def replay_without_ops(body):
    """A stand-in for a CUDA graph capture: the body runs once now (as a capture records it), and
    each replay returns those logits with no op (on a GPU, a replay is one launch)."""
    logits = body()
    return lambda: logits


def ops_per_decode_step(model, tokenizer, prompts: list[list[int]], batch: int, attention: str, step=None) -> float:
    """ATen ops that would launch a kernel, inside the engine's decode steps (with `step`, the
    dynamic one without): the median step's."""
    import statistics

    from torch.profiler import ProfilerActivity, profile, record_function

    from lib.engine.prefix_sharing import PrefixSharingEngine

    engine = PrefixSharingEngine(model, tokenizer, max_new_tokens=16, batch_size=batch, attention=attention, step=step)
    steady = getattr(getattr(step, "capture", None), "steps_before_replays", 1)  # a window's steps before replays
    decode_step = engine.step._decode_step

    def labelled_step(engine, rows):
        with record_function("engine_decode_step"):
            decode_step(engine, rows)

    engine.step._decode_step = labelled_step
    engine.generate(prompts)  # warm-up: lazy initialisation is not a step's work
    with profile(activities=[ProfilerActivity.CPU]) as trace:
        engine.generate(prompts)
    events = trace.events()
    steps = [event for event in events if event.name == "engine_decode_step"]

    def its_step(event):
        parent = event.cpu_parent
        while parent is not None:
            if parent.name == "engine_decode_step":
                return parent
            parent = parent.cpu_parent
        return None

    launches = {id(step): 0 for step in steps}
    for event in events:
        step = its_step(event)
        if step is not None and launches_a_kernel(event):
            launches[id(step)] += 1
    return statistics.median(list(launches.values())[steady - 1:] if steady > 1 else launches.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, nargs=2, default=[2, 4], help="two depths to split per-layer ops from")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--attention", choices=["eager", "fused"], default="fused")
    options = parser.parse_args()

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(embedded_model_path())
    shared = "You are a careful assistant. Solve the problem step by step. " * 4
    prompts = [tokenizer.apply_chat_template([{"role": "user", "content": shared + question}],
                                             add_generation_prompt=True, return_dict=True)["input_ids"]
               for question in ("What is 2 + 2?", "Name a colour.", "Why is the sky blue?", "Count to three.",
                                "Say hi.", "Spell cat.", "What is 7 x 8?", "Hm?")]
    from lib.engine.static import StaticStep

    shallow, deep = options.layers
    models = {layers: tiny_qwen3(tokenizer, layers) for layers in (shallow, deep)}
    for make_step in (lambda: None, StaticStep):  # the dynamic step, then the static one (eager here)
        counts = {layers: ops_per_decode_step(model, tokenizer, prompts, options.batch, options.attention, make_step())
                  for layers, model in models.items()}
        per_layer = (counts[deep] - counts[shallow]) / (deep - shallow)
        fixed = counts[shallow] - shallow * per_layer
        projected = fixed + QWEN3_4B_LAYERS * per_layer
        low, high = (projected * us / 1000 for us in LAUNCH_US)
        mode = "dynamic" if make_step() is None else "static, eager"
        print(f"decode ops: {mode}, {options.attention} attention, batch {options.batch}: ATen ops per decode step"
              f" {counts[shallow]:.0f} at {shallow} layers, {counts[deep]:.0f} at {deep} ->"
              f" {per_layer:.1f} per layer + {fixed:.0f} fixed; Qwen3-4B ({QWEN3_4B_LAYERS} layers) -> {projected:.0f}"
              f" launches per step, {low:.0f}-{high:.0f} ms of host time at {LAUNCH_US[0]}-{LAUNCH_US[1]} us each")
    outside = ops_per_decode_step(models[shallow], tokenizer, prompts, options.batch, options.attention,
                                  StaticStep(replay_without_ops))
    eager_static = counts
    print(f"decode ops: static, replayed as a CUDA graph, batch {options.batch}: {outside:.0f} ATen ops per step"
          f" outside the graph + 1 replay, at any depth; Qwen3-4B -> {outside + 1:.0f} launches per step,"
          f" {(outside + 1) * LAUNCH_US[1]:.0f} us of host time at most")
    import torch
    import torch._inductor.config

    torch._inductor.config.cpp.enable_kernel_profile = True  # each fused kernel an event of the profile
    fused = {layers: ops_per_decode_step(model, tokenizer, prompts, options.batch, options.attention,
                                         StaticStep(CompiledStep(torch.device("cpu"))))
             for layers, model in models.items()}
    per_layer = (fused[deep] - fused[shallow]) / (deep - shallow)
    projected = fused[shallow] - shallow * per_layer + QWEN3_4B_LAYERS * per_layer
    eager_projected = eager_static[shallow] + (QWEN3_4B_LAYERS - shallow) * (
        eager_static[deep] - eager_static[shallow]) / (deep - shallow)
    print(f"decode ops: static, compiled by inductor (fused), batch {options.batch}: kernels per decode step"
          f" {fused[shallow]:.0f} at {shallow} layers, {fused[deep]:.0f} at {deep} -> {per_layer:.1f} per layer;"
          f" Qwen3-4B -> {projected:.0f} kernels per replay, x{eager_projected / projected:.1f} fewer than the"
          f" {eager_projected:.0f} of the eager static step (each ~2-3 us of GPU time in a graph)")


if __name__ == "__main__":
    main()
