"""Resumable, data-parallel work over a data set: generation with the engine, or any per-chunk computation.

Work is cut into chunks of `chunk_size` prompts in input order. Each finished chunk's rows are
appended (flushed) to a per-process file under a partial folder; a rerun after a kill skips the
finished chunks and redoes the ones that were cut. Under `accelerate launch`, process r takes
chunks r, r+N, ... Generation feeds a process's chunks to the engine in one stream (the next
chunk's prompts refill the slots of the last one's), so a row can share its batch with rows of
the neighbouring chunk: greedy answers do not depend on their batch, up to float near-ties of the
top two tokens, and sampling draws from each row's own seed.
"""

from __future__ import annotations

import json
from pathlib import Path

from lib.devices import process_state
from lib.engine.prefix_sharing import EngineStats, PrefixSharingEngine
from lib.pipeline.fingerprints import reset_dir_unless_fingerprint


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
                in_order=True, on_result=lambda position, output, order=order: finished(order[position], vars(output)))
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
