"""An evaluation of a run: what is evaluated, where its files go, whether they are already made
from the same inputs, resuming, and writing. Generation is the engine's (lib/engine/generate.py),
called from here; score_safety uses this layer with the judge instead.

An evaluation stage reads as: build the prompts, then `evaluate(...)` with a function that scores
the answers into rows and a summary. Each evaluation writes a per-item JSONL (the Make target,
written last) and a metrics JSON holding the fingerprint of its inputs (the stage's keys, its
input files and the weights); a rerun with the same fingerprint does nothing.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lib.errors import InputError
from lib.io import atomic_write_json, atomic_write_jsonl, file_sha256
from lib.pipeline.artifacts import RunPaths, supersede
from lib.pipeline.fingerprints import current_record, mark_current
from lib.pipeline.stage_graph import evaluation_tasks

# Each evaluation stage's folder of unfinished work (RunPaths.partial) is named for its task.
TASKS = evaluation_tasks()


@dataclass
class EvalTarget:
    """What is evaluated: the run's adapter, one of its checkpoints, or the base model alone."""

    adapter: Path | None
    tag: str  # appended to output names: "" (adapter), "_base", "_checkpoint-50"


def eval_target(run: RunPaths, base_only: bool, checkpoint: str | None, need_weights: bool = True,
                base_run: bool = False) -> EvalTarget:
    """The weights to evaluate; with need_weights=False only the output-name tag (a stage that
    reads another stage's outputs). A base run (eval.adapter: none) evaluates the base model under
    the run's own names."""
    if base_only and checkpoint:
        raise InputError("--base-only and --checkpoint exclude each other")
    if base_run:
        if base_only or checkpoint:
            raise InputError(f"run {run.name!r} evaluates the base model (eval.adapter: none): it has no adapter or"
                             " checkpoints, so --base-only and --checkpoint do not apply")
        return EvalTarget(None, "")
    if base_only or not need_weights:
        return EvalTarget(None, "_base" if base_only else f"_{checkpoint}" if checkpoint else "")
    if checkpoint:
        path = run.checkpoint(checkpoint)
        if not (path / "adapter_config.json").is_file():
            raise InputError(f"{path}: no such checkpoint (see {run.checkpoints})")
        return EvalTarget(path, f"_{checkpoint}")
    if not run.training_complete.is_file():
        raise InputError(f"{run.adapter}: no finished adapter (run `make train RUN={run.name}` first, or pass"
                         " --base-only)")
    return EvalTarget(run.adapter, "")


@dataclass(frozen=True)
class Evaluation:
    """One stage's evaluation of one target: its files, its unfinished work, its fingerprint."""

    run: RunPaths
    stage: str
    target: EvalTarget
    fingerprint: str

    @classmethod
    def of(cls, run: RunPaths, stage: str, target: EvalTarget, *input_files: Path) -> Evaluation:
        """The evaluation, fingerprinted from the stage's keys (params/<stage>.json), its input files
        and the weights' file."""
        parts = [run.params(stage).read_bytes(), target.tag.encode()]
        parts += [file_sha256(path).encode() for path in input_files]
        if target.adapter is not None:
            parts.append(file_sha256(target.adapter / "adapter_model.safetensors").encode())
        return cls(run, stage, target, hashlib.sha256(b"\0".join(parts)).hexdigest())

    @property
    def preds(self) -> Path:
        return self.run.evaluation(self.stage, "preds", self.target.tag)

    @property
    def metrics(self) -> Path:
        return self.run.evaluation(self.stage, "metrics", self.target.tag)

    @property
    def partial(self) -> Path:
        return self.run.partial(TASKS[self.stage], self.target.tag)

    def done(self) -> dict | None:
        """Its metrics when already made from these inputs, else None (a query: see `skip_when_done`)."""
        return current_record(self.preds, self.metrics, self.fingerprint)

    def skip_when_done(self) -> bool:
        """When already made from these inputs: said, the output marked current for Make, and True."""
        if self.done() is None:
            return False
        print(f"{self.stage}: {self.preds} is up to date")
        mark_current(self.preds)
        return True

    def write(self, rows: list[dict], summary: dict) -> None:
        """`summary` as the metrics first, the per-item file last (it is the Make target), then drop the partial
        work. Earlier files under these names came from other inputs (else the stage was up to date):
        they move to the run's superseded/ folder."""
        supersede(self.run, [self.preds, self.metrics], f"{self.preds.name}: results of other inputs")
        atomic_write_json(self.metrics, summary)
        atomic_write_jsonl(self.preds, rows)
        shutil.rmtree(self.partial, ignore_errors=True)


@dataclass(frozen=True)
class Evaluated:
    """What `evaluate` did: "written" (its metrics), "up to date" (already made from these inputs), or
    "another process" (a rank of a launch that is not the main one, which writes)."""

    outcome: str
    metrics: dict | None = None


def evaluate(evaluation: Evaluation, model, decoding, models_dir: Path, conversations: list[list[dict]],
             ids: list[str], score: Callable[[list], tuple[list[dict], dict]]) -> Evaluated:
    """Generate the answers of `model` (a ModelSpec, lib/engine/generate.py; earlier chunks resumed),
    score them with `score(outputs) -> (rows, summary)` and write both."""
    if evaluation.skip_when_done():
        return Evaluated("up to date")
    from lib.engine.generate import generate_answers

    outputs, stats, settings = generate_answers(model, decoding, models_dir, evaluation.partial, conversations, ids,
                                                evaluation.fingerprint, TASKS[evaluation.stage])
    if outputs is None:
        return Evaluated("another process")
    rows, summary = score(outputs)
    metrics = {"run": evaluation.run.name, "task": TASKS[evaluation.stage], "fingerprint": evaluation.fingerprint,
               **summary, "generation": settings, "engine": vars(stats)}
    evaluation.write(rows, metrics)
    return Evaluated("written", metrics)
