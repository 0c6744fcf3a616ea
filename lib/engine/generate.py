"""The engine's front: load the weights, pick the generator, generate resumably.

`generate_answers` is what the stages call: it loads the model (lib/models.py), renders the chat
prompts, chooses the generator (`choose_generator`: the prefix-sharing engine with the dynamic or
static decode step, or plain batched `generate` for attention the engine does not reproduce) and
runs it over resumable chunks (lib/engine/resumable.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lib.devices import process_state, resolve_eval_dtype
from lib.engine.decode_choice import DecodeChooser
from lib.engine.dynamic import DynamicStep
from lib.engine.outputs import Generator
from lib.engine.plain_generate import BatchedGenerate, engine_unsupported
from lib.engine.prefix_sharing import PrefixSharingEngine
from lib.engine.resumable import generate_resumable
from lib.engine.sampling import Sampling
from lib.engine.static import StaticStep
from lib.errors import InputError
from lib.models import TrainedBase
from lib.pipeline.config import EvalConfig, ModelConfig, QuantConfig


@dataclass(frozen=True)
class ModelSpec:
    """What an evaluation loads, not the weights themselves: the base as the preset names it, an adapter
    and how it is applied (lib/models.load_for_inference loads it)."""

    base: str  # model.base: hub id, local folder or embedded:<name>
    revision: str | None
    trust_remote_code: bool
    adapter: Path | None  # None: the base model alone
    model_format: str  # eval.model_format (lib/models.py MODEL_FORMATS)
    dtype: str  # eval.dtype: auto, bfloat16, float16, float32
    trained: TrainedBase | None = None  # how training loaded the adapter's base; needed with an adapter


@dataclass(frozen=True)
class Decoding:
    """How the engine decodes: lengths, batch, resumable chunks, stops, greedy or sampled, kernel."""

    max_new_tokens: int
    batch_size: int  # sequences decoding together
    chunk_size: int  # prompts per resumable chunk
    stop_strings: tuple[str, ...] = ()
    sampling: Sampling | None = None  # None: greedy
    attention: str = "auto"  # hardware.attention
    decode: str = "auto"  # hardware.decode


def evaluated_model(model: ModelConfig, eval_section: EvalConfig, quant: QuantConfig,
                    adapter: Path | None) -> ModelSpec:
    """What an evaluation stage loads: the run's base, `adapter` applied as eval.model_format says on the
    base as training quantized it (quant)."""
    return ModelSpec(model.base, model.revision, model.trust_remote_code, adapter, eval_section.model_format,
                     eval_section.dtype, TrainedBase.from_quant(quant))


def greedy_decoding(eval_section: EvalConfig, attention: str, decode: str = "auto") -> Decoding:
    """How an evaluation stage decodes: greedy, with the eval section's lengths and stops."""
    return Decoding(eval_section.max_new_tokens, eval_section.batch_size, eval_section.chunk_size,
                    tuple(eval_section.stop_strings), None, attention, decode)


def generate_answers(spec: ModelSpec, decoding: Decoding, models_dir: Path, partial_dir: Path,
                     conversations: list[list[dict]], ids: list[str], fingerprint: str, task: str,
                     seeds: list[int] | None = None):
    """Load the model, render the chat prompts, generate resumably into `partial_dir`:
    (outputs | None on other processes, engine stats, the settings the metrics record). Sampling
    draws one answer per conversation from its own seed (`seeds`)."""
    from lib.embedded import resolve_model_path
    from lib.models import load_for_inference

    dtype = resolve_eval_dtype(spec.dtype)
    path = resolve_model_path(spec.base, models_dir)
    model, tokenizer, precision = load_for_inference(path, spec.adapter, spec.model_format, dtype,
                                                     spec.trained, spec.revision, spec.trust_remote_code)
    prompts = [tokenizer.apply_chat_template(c, add_generation_prompt=True, return_dict=True)["input_ids"]
               for c in conversations]
    engine = choose_generator(model, tokenizer, prompts, decoding.max_new_tokens, decoding.batch_size,
                              decoding.stop_strings, label=task, sampling=decoding.sampling,
                              attention=decoding.attention, decode=decoding.decode)
    outputs, stats = generate_resumable(prompts, ids, engine, partial_dir, fingerprint, decoding.chunk_size, task,
                                        seeds)
    settings = {
        "base_model": spec.base, "adapter": str(spec.adapter) if spec.adapter else None,
        "model_format": spec.model_format if spec.adapter else "base", "base_precision": precision,
        "dtype": str(dtype).removeprefix("torch."), "greedy": decoding.sampling is None,
        **({"sampling": vars(decoding.sampling)} if decoding.sampling else {}), "generator": type(engine).__name__,
        "attention": engine.attention_kernel(), "decode": engine.decode_mode,
        "decode_choice": engine.decode_choice and engine.decode_choice.record(),
        "max_new_tokens": decoding.max_new_tokens, "batch_size": decoding.batch_size,
        "stop_strings": list(decoding.stop_strings), "eos_token_ids": sorted(engine.eos),
        "processes": process_state().num_processes,
    }
    return outputs, stats, settings


def choose_generator(model, tokenizer, prompts: list[list[int]], max_new_tokens: int, batch_size: int,
                     stop_strings: tuple[str, ...] = (), score_token_ids: tuple[int, ...] = (), label: str = "",
                     sampling: Sampling | None = None, attention: str = "auto", decode: str = "auto",
                     chooser: DecodeChooser | None = None) -> Generator:
    """The prefix-sharing engine (with the `attention` kernel and the `decode` step; auto's choices
    kept by `chooser`, the caller's for this model, else a new one), or plain batched generate when
    the model's attention needs it (printed)."""
    reason = engine_unsupported(model, max(map(len, prompts), default=0) + max_new_tokens)
    if reason is None:
        chooser = chooser or DecodeChooser(model, tokenizer, label)
        choice = chooser.choose(decode, prompts, attention, batch_size, max_new_tokens)
        # Under auto a static step that cannot be captured runs eagerly rather than stopping.
        step = StaticStep.on(next(model.parameters()).device, fallback=decode == "auto") \
            if choice.step == "static" else DynamicStep()
        return PrefixSharingEngine(model, tokenizer, max_new_tokens, batch_size, stop_strings,
                                   score_token_ids=score_token_ids, sampling=sampling, attention=attention, step=step,
                                   decode_choice=choice)
    if sampling is not None:
        raise InputError(f"{label}: the model uses {reason}; sampling with one seed per prompt needs the"
                         " prefix-sharing engine, which does not reproduce it (use another model)")
    print(f"{label}: the model uses {reason}, which the prefix-sharing engine does not reproduce;"
          " generating with plain batched generate (slower, same answers)")
    return BatchedGenerate(model, tokenizer, max_new_tokens, batch_size, stop_strings, score_token_ids=score_token_ids)
