"""Evaluation runs: the model to evaluate, and resumable, data-parallel generation over a data set.

Work is cut into chunks of `chunk_size` prompts in input order. Each finished chunk's rows are
appended (flushed) to a per-process file under a partial folder; a rerun after a kill skips the
finished chunks and redoes the ones that were cut. Under `accelerate launch`, process r takes
chunks r, r+N, ... Generation feeds a process's chunks to the engine in one stream (the next
chunk's prompts refill the slots of the last one's), so a row can share its batch with rows of
the neighbouring chunk: greedy answers do not depend on their batch, up to float near-ties of the
top two tokens, and sampling draws from each row's own seed.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from lib.pipeline.artifacts import evaluation_file, supersede
from lib.engine.batched import choose_generator
from lib.devices import process_state, resolve_eval_dtype
from lib.errors import InputError
from lib.engine.scheduler import EngineStats, PrefixSharingEngine, Sampling
from lib.io import atomic_write_json, atomic_write_jsonl, file_sha256, reset_dir_unless_fingerprint
from lib.models import TrainedBase


def generate_resumable(prompts: list[list[int]], ids: list[str], engine: PrefixSharingEngine, partial_dir: Path,
                       fingerprint: str, chunk_size: int, progress_desc: str,
                       seeds: list[int] | None = None, stream: bool = True) -> tuple[list | None, EngineStats]:
    """Outputs for all prompts, in input order (on the main process; None elsewhere); greedy, or
    sampled with `seeds` (one per prompt) when the engine samples.

    With `stream`, this process's pending chunks go to the engine in one call, in chunk order
    (longest prompt first within a chunk): as a chunk's last rows finish, the next chunk's prompts
    take their slots, so the batch never drains at a chunk boundary; a chunk is written once all
    its rows are done. Without it each chunk is one call, always the same batches: what a caller
    needs whose outputs include probabilities that must repeat to the last digit (the judge's
    scores). Each output is a dict {token_ids, text, stop_reason[, first_token_probs]}. Engine
    statistics cover the work this call did (not chunks finished by an earlier, interrupted call).
    """
    stats = EngineStats()

    def generate_chunks(chunks: list[list[int]], bar, finished) -> None:
        for calls in ([chunks] if stream else [[chunk] for chunk in chunks]):
            order = [i for chunk in calls for i in sorted(chunk, key=lambda i: -len(prompts[i]))]
            _, call_stats = engine.generate(
                [prompts[i] for i in order], progress=bar, seeds=None if seeds is None else [seeds[i] for i in order],
                in_order=True, on_result=lambda position, output: finished(order[position], vars(output)))
            _add_stats(stats, call_stats)

    return _resumable(ids, generate_chunks, partial_dir, fingerprint, chunk_size, progress_desc), stats


def run_resumable(ids: list[str], compute_chunk, partial_dir: Path, fingerprint: str, chunk_size: int,
                  progress_desc: str) -> list[dict] | None:
    """compute_chunk(indices, progress_bar) -> one JSON-able dict per index, run chunk by chunk
    with each finished chunk appended to this process's partial file; all results in input order
    on the main process (None elsewhere)."""

    def chunk_by_chunk(chunks: list[list[int]], bar, finished) -> None:
        for chunk in chunks:
            for index, result in zip(chunk, compute_chunk(chunk, bar)):
                finished(index, result)

    return _resumable(ids, chunk_by_chunk, partial_dir, fingerprint, chunk_size, progress_desc)


def _resumable(ids: list[str], compute, partial_dir: Path, fingerprint: str, chunk_size: int,
               progress_desc: str) -> list[dict] | None:
    """compute(chunks, progress_bar, finished) calls finished(index, result) once per index of its
    chunks, in any order; a chunk is appended to this process's partial file when all its results
    are in. All results in input order on the main process (None elsewhere)."""
    from tqdm.auto import tqdm

    state = process_state()
    if state.is_main_process:
        reset_dir_unless_fingerprint(partial_dir, fingerprint)
    state.wait_for_everyone()
    own_file = partial_dir / f"outputs.rank{state.process_index}.jsonl"
    done = _read_partial(partial_dir)
    _keep_complete_lines(own_file)

    chunks = [list(range(start, min(start + chunk_size, len(ids)))) for start in range(0, len(ids), chunk_size)]
    mine = [chunk for number, chunk in enumerate(chunks)
            if number % state.num_processes == state.process_index and not all(ids[i] in done for i in chunk)]
    chunk_of = {index: number for number, chunk in enumerate(mine) for index in chunk}
    waiting: dict[int, dict[int, dict]] = {}  # chunk number -> its finished results so far

    def finished(index: int, result: dict) -> None:
        number = chunk_of[index]
        waiting.setdefault(number, {})[index] = result
        if len(waiting[number]) == len(mine[number]):
            results = waiting.pop(number)
            with open(own_file, "a", encoding="utf-8") as handle:
                for item in mine[number]:
                    handle.write(json.dumps({"id": ids[item], **results[item]}, ensure_ascii=False) + "\n")
                handle.flush()

    with tqdm(total=sum(len(c) for c in mine), desc=progress_desc, disable=not state.is_main_process) as bar:
        if mine:
            compute(mine, bar, finished)
    state.wait_for_everyone()
    if not state.is_main_process:
        return None
    done = _read_partial(partial_dir)
    missing = [i for i in ids if i not in done]
    if missing:
        raise RuntimeError(f"finished without results for {len(missing)} items (first: {missing[0]})")
    return [done[i] for i in ids]


def _read_partial(partial_dir: Path) -> dict[str, dict]:
    """Outputs already written by any process, by id (a cut last line is ignored)."""
    outputs = {}
    for path in sorted(partial_dir.glob("outputs.rank*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            outputs[record.pop("id")] = record
    return outputs


def _keep_complete_lines(path: Path) -> None:
    # A kill can cut the last line; appending after it would glue the next record onto it.
    if not path.is_file():
        return
    text = path.read_text(encoding="utf-8")
    if text and not text.endswith("\n"):
        path.write_text(text[: text.rfind("\n") + 1], encoding="utf-8")


def _add_stats(total: EngineStats, part: EngineStats) -> None:
    for name, value in vars(part).items():
        setattr(total, name, getattr(total, name) + value)


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
    from lib.pipeline.artifacts import COMPLETE_FILE

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
        raise InputError(f"{adapter}: no finished adapter (run `make train` first, or pass --base-only)")
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
    if already_done(preds, metrics, fingerprint):
        print(f"{stage}: {preds} is up to date")
        return None
    return preds, metrics, fingerprint


def already_done(preds: Path, metrics: Path, fingerprint: str) -> bool:
    """True (and the outputs marked current for Make) when they were made from the same inputs."""
    if not (preds.is_file() and metrics.is_file()):
        return False
    if json.loads(metrics.read_text(encoding="utf-8")).get("fingerprint") != fingerprint:
        return False
    preds.touch()
    return True


def generate_for_evaluation(model_config, eval_config, trained: TrainedBase | None, models_dir: Path, run_dir: Path,
                            target: EvalTarget, conversations: list[list[dict]], ids: list[str], fingerprint: str,
                            task: str, sampling: Sampling | None = None, seeds: list[int] | None = None,
                            attention: str = "auto"):
    """Load the model, render the chat prompts, generate resumably: (outputs | None, stats, settings).
    `trained` says how the adapter's base was loaded in training (None without an adapter).
    Greedy, or with `sampling` one draw per conversation from its own seed (`seeds`); `attention`
    is the engine's kernel (hardware.attention)."""
    from lib.models import load_for_inference, resolve_model_path

    dtype = resolve_eval_dtype(eval_config.dtype)
    base = resolve_model_path(model_config.base, models_dir)
    model, tokenizer, precision = load_for_inference(base, target.adapter, eval_config.model_format, dtype, trained,
                                                     model_config.revision, model_config.trust_remote_code)
    prompts = [tokenizer.apply_chat_template(c, add_generation_prompt=True, return_dict=True)["input_ids"]
               for c in conversations]
    engine = choose_generator(model, tokenizer, prompts, eval_config.max_new_tokens, eval_config.batch_size,
                              tuple(eval_config.stop_strings), label=task, sampling=sampling, attention=attention)
    outputs, stats = generate_resumable(prompts, ids, engine, run_dir / f"partial_{task}{target.tag}", fingerprint,
                                        eval_config.chunk_size, task, seeds)
    settings = {
        "base_model": model_config.base, "adapter": str(target.adapter) if target.adapter else None,
        "model_format": eval_config.model_format if target.adapter else "base", "base_precision": precision,
        "dtype": str(dtype).removeprefix("torch."), "greedy": sampling is None,
        **({"sampling": vars(sampling)} if sampling else {}), "generator": type(engine).__name__,
        "attention": engine.attention_kernel(),
        "max_new_tokens": eval_config.max_new_tokens, "batch_size": eval_config.batch_size,
        "stop_strings": list(eval_config.stop_strings), "eos_token_ids": sorted(engine.eos),
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
