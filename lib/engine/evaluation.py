"""Evaluating a model: what is evaluated (adapter, checkpoint or base), where its outputs go,
whether they are already made from the same inputs, and generation over the prompts.

Each evaluation stage writes a per-item JSONL (the Make target, written last) and a metrics JSON
holding the fingerprint of its inputs: the stage's keys, its input files and the weights.
"""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass
from pathlib import Path

from lib.devices import process_state, resolve_eval_dtype
from lib.engine.batched import choose_generator
from lib.engine.runner import generate_resumable
from lib.engine.sampling import Sampling
from lib.errors import InputError
from lib.io import atomic_write_json, atomic_write_jsonl, file_sha256
from lib.models import TrainedBase
from lib.pipeline.artifacts import COMPLETE_FILE, evaluation_file, supersede
from lib.pipeline.config import EvalConfig, ModelConfig, QuantConfig
from lib.pipeline.fingerprints import up_to_date


@dataclass
class EvalTarget:
    """What is evaluated: the run's adapter, one of its checkpoints, or the base model alone."""

    adapter: Path | None
    tag: str  # appended to output names: "" (adapter), "_base", "_checkpoint-50"


def eval_target(run_dir: Path, base_only: bool, checkpoint: str | None, need_weights: bool = True,
                base_run: bool = False) -> EvalTarget:
    """The weights to evaluate; with need_weights=False only the output-name tag (a stage that
    reads another stage's outputs). A base run (eval.adapter: none) evaluates the base model under
    the run's own names."""
    if base_only and checkpoint:
        raise InputError("--base-only and --checkpoint exclude each other")
    if base_run:
        if base_only or checkpoint:
            raise InputError(f"{run_dir.name} evaluates the base model (eval.adapter: none): it has no adapter or"
                             " checkpoints, so --base-only and --checkpoint do not apply")
        return EvalTarget(None, "")
    if base_only or not need_weights:
        return EvalTarget(None, "_base" if base_only else f"_{checkpoint}" if checkpoint else "")
    if checkpoint:
        path = run_dir / "checkpoints" / checkpoint
        if not (path / "adapter_config.json").is_file():
            raise InputError(f"{path}: no such checkpoint (see {run_dir / 'checkpoints'})")
        return EvalTarget(path, f"_{checkpoint}")
    adapter = run_dir / "adapter"
    if not (adapter / COMPLETE_FILE).is_file():
        run = run_dir.name.removeprefix("run_")
        raise InputError(f"{adapter}: no finished adapter (run `make train RUN={run}` first, or pass --base-only)")
    return EvalTarget(adapter, "")


def output_paths(artifacts: Path, stage: str, run: str, target: EvalTarget) -> tuple[Path, Path]:
    """(per-item JSONL, metrics JSON) of an evaluation stage under the artifact root."""
    return (evaluation_file(artifacts, stage, "preds", run, target.tag),
            evaluation_file(artifacts, stage, "metrics", run, target.tag))


def evaluation_fingerprint(params_file: Path, target: EvalTarget, *input_files: Path) -> str:
    """What an evaluation's outputs depend on: the stage's keys and input files, the weights."""
    parts = [params_file.read_bytes(), target.tag.encode()]
    parts += [file_sha256(path).encode() for path in input_files]
    if target.adapter is not None:
        parts.append(file_sha256(target.adapter / "adapter_model.safetensors").encode())
    return hashlib.sha256(b"\0".join(parts)).hexdigest()


def prepare_evaluation(artifacts: Path, run_dir: Path, run: str, stage: str, target: EvalTarget,
                       *input_files: Path) -> tuple[Path, Path, str] | None:
    """(per-item file, metrics file, fingerprint) of an evaluation stage's work; None, said and the
    outputs marked current for Make, when they were already made from the same inputs."""
    preds, metrics = output_paths(artifacts, stage, run, target)
    fingerprint = evaluation_fingerprint(run_dir / "params" / f"{stage}.json", target, *input_files)
    if up_to_date(preds, metrics, fingerprint):
        print(f"{stage}: {preds} is up to date")
        return None
    return preds, metrics, fingerprint


@dataclass(frozen=True)
class Weights:
    """What an evaluation loads: the base as the preset names it, an adapter and how it is applied."""

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


def evaluated_weights(model: ModelConfig, evaluation: EvalConfig, quant: QuantConfig, adapter: Path | None) -> Weights:
    """The weights an evaluation stage loads: the run's base, `adapter` applied as eval.model_format
    says on the base as training quantized it (quant)."""
    return Weights(model.base, model.revision, model.trust_remote_code, adapter, evaluation.model_format,
                   evaluation.dtype, TrainedBase.from_quant(quant))


def greedy_decoding(evaluation: EvalConfig, attention: str, decode: str = "auto") -> Decoding:
    """How an evaluation stage decodes: greedy, with the eval section's lengths and stops."""
    return Decoding(evaluation.max_new_tokens, evaluation.batch_size, evaluation.chunk_size,
                    tuple(evaluation.stop_strings), None, attention, decode)


def generate_for_evaluation(weights: Weights, decoding: Decoding, models_dir: Path, partial_dir: Path,
                            conversations: list[list[dict]], ids: list[str], fingerprint: str, task: str,
                            seeds: list[int] | None = None):
    """Load the model, render the chat prompts, generate resumably into `partial_dir`:
    (outputs | None on other processes, engine stats, the settings the metrics record). Sampling
    draws one answer per conversation from its own seed (`seeds`)."""
    from lib.models import load_for_inference, resolve_model_path

    dtype = resolve_eval_dtype(weights.dtype)
    path = resolve_model_path(weights.base, models_dir)
    model, tokenizer, precision = load_for_inference(path, weights.adapter, weights.model_format, dtype,
                                                     weights.trained, weights.revision, weights.trust_remote_code)
    prompts = [tokenizer.apply_chat_template(c, add_generation_prompt=True, return_dict=True)["input_ids"]
               for c in conversations]
    engine = choose_generator(model, tokenizer, prompts, decoding.max_new_tokens, decoding.batch_size,
                              decoding.stop_strings, label=task, sampling=decoding.sampling,
                              attention=decoding.attention, decode=decoding.decode)
    outputs, stats = generate_resumable(prompts, ids, engine, partial_dir, fingerprint, decoding.chunk_size, task,
                                        seeds)
    settings = {
        "base_model": weights.base, "adapter": str(weights.adapter) if weights.adapter else None,
        "model_format": weights.model_format if weights.adapter else "base", "base_precision": precision,
        "dtype": str(dtype).removeprefix("torch."), "greedy": decoding.sampling is None,
        **({"sampling": vars(decoding.sampling)} if decoding.sampling else {}), "generator": type(engine).__name__,
        "attention": engine.attention_kernel(), "decode": engine.decode_mode,
        "max_new_tokens": decoding.max_new_tokens, "batch_size": decoding.batch_size,
        "stop_strings": list(decoding.stop_strings), "eos_token_ids": sorted(engine.eos),
        "processes": process_state().num_processes,
    }
    return outputs, stats, settings


def write_evaluation(preds: Path, metrics: Path, rows: list[dict], summary: dict, partial_dir: Path) -> None:
    """Metrics first, the per-item file last (it is the Make target), then drop the partial work.

    Earlier files under these names came from other inputs (else the stage was up to date): they
    move to the run's superseded/ folder (the partial folder's parent is the run folder)."""
    supersede(partial_dir.parent, [preds, metrics], f"{preds.name}: results of other inputs")
    atomic_write_json(metrics, summary)
    atomic_write_jsonl(preds, rows)
    shutil.rmtree(partial_dir, ignore_errors=True)
