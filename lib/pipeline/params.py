"""What Make reads of a run: params/<stage>.json (the keys each stage reads, and the fingerprints of the
local input files it reads) and params/make.mk, each rewritten only when its content changes, so
their mtimes tell Make which stages' inputs changed; and for `make -n`, the same into a folder of its
own (nothing of the run written)."""

from __future__ import annotations

import os
from pathlib import Path

from lib.io import dumps_json, file_sha256, write_if_changed
from lib.pipeline.artifacts import MAKE_VARS_FILE, RunPaths
from lib.pipeline.config import Config, without_runtime_keys
from lib.pipeline.stage_graph import stage_keys, stages

# Input files a stage writes itself (prep_fewshot draws the pool, refine may build the refined
# training file); Make follows them as file prerequisites (the pool through the run folder's copy),
# so fingerprinting them too would rerun their readers once more after every write.
WRITTEN_BY_STAGES = ("fewshot.path", "data.refined_train")

def write_params(config: Config, folder: Path) -> None:
    """params/<stage>.json (the keys each stage reads and the fingerprints of its local input files)
    and params/make.mk into `folder`, each rewritten only when its content changes: their mtimes
    tell Make which stages' keys changed."""
    for name, text in params_files(config).items():
        write_if_changed(folder / name, text)


def params_files(config: Config) -> dict[str, str]:
    """The params files' names and contents for this config."""
    values, inputs = config.to_dict(), local_inputs(config)
    files = {}
    for stage in (spec.name for spec in stages()):
        keys = stage_keys(stage)
        slice_ = without_runtime_keys({key: _lookup(values, key) for key in keys})
        read = {key: file_sha256(path) for key, path in inputs.items()
                if _reads(keys, key) and key not in WRITTEN_BY_STAGES}
        files[f"{stage}.json"] = dumps_json({"params": slice_, "files": read})
    # What Make needs to know of the run before it runs anything (the Makefile includes this file):
    # the refined training file that tokenize waits for (built by refine when absent), and whether
    # the run evaluates the base model alone (then no evaluation waits for an adapter), and whether
    # it sweeps checkpoints (only then does `make sweep` wait for training).
    files[MAKE_VARS_FILE] = (f"REFINED_TRAIN := {config.data.refined_train or ''}\n"
                             f"BASE_RUN := {'1' if config.eval.adapter == 'none' else ''}\n"
                             f"SWEEP := {'1' if config.sweep.enabled else ''}\n")
    return files


def write_dry_run_params(config: Config, run: RunPaths, folder: Path) -> None:
    """What recording would write into params/, written into `folder` instead (for `make -n`; a folder of
    this call): a file whose content is the run's own gets its time too; another is written now (newer
    than every output). Make plans from these as from the real ones, and a second pass of the same
    call (Make restarts after remaking a makefile) finds them unchanged. Nothing of the run is written."""
    for name, text in params_files(config).items():
        real, dry = run.params_folder / name, folder / name
        write_if_changed(dry, text)
        if real.is_file() and real.read_text(encoding="utf-8") == text:
            mtime = real.stat().st_mtime_ns
            if dry.stat().st_mtime_ns != mtime:
                os.utime(dry, ns=(mtime, mtime))


def local_inputs(config: Config) -> dict[str, Path]:
    """The config's input files that exist on disk (hub sources are not files)."""
    candidates = {
        "data.gsm8k_train": config.data.gsm8k_train,
        "data.gsm8k_test": config.data.gsm8k_test,
        "data.refined_train": config.data.refined_train,
        "data.ailuminate": config.data.ailuminate,
        "fewshot.path": config.fewshot.path,
        "safety.safety_prompt": config.safety.safety_prompt,
    }
    return {key: Path(value) for key, value in candidates.items() if value and Path(value).is_file()}


def _reads(keys: tuple[str, ...], key: str) -> bool:
    return key in keys or key.split(".")[0] in keys


def _lookup(values: dict, dotted: str):
    node = values
    for part in dotted.split("."):
        node = node[part]
    return node


