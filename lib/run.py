"""A run: its validated name, its folder under the artifact root, and its recorded config.

`write_run_config` writes two things into artifacts/run_<run>/:
- config_resolved.json: the whole resolved config with git commit, date, seeds, library versions
  and the local input files with their record counts (no environment, so no token, ever);
- params/<stage>.json: only the keys each stage reads, plus fingerprints of its local input
  files, each rewritten only when its content changes. Make targets depend on these, so changing
  a preset value reruns from the first stage that reads it and nothing earlier.

`python -m lib.run --preset P --run R [--set k=v ...]` is what the Makefile calls before stages.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import json
import re
import subprocess
from pathlib import Path

import click

from lib.config import Config, load_config
from lib.errors import InputError
from lib.io import count_jsonl_records, dumps_json, file_sha256, write_if_changed

COMPLETE_FILE = "training_complete.json"  # written last into run_<run>/adapter/: training finished
CHECKPOINT_PREFIX = "checkpoint-"  # the Trainer's run_<run>/checkpoints/checkpoint-<step>/


def checkpoint_step(name: str) -> int:
    return int(name[len(CHECKPOINT_PREFIX):])


RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")

# What each stage reads: whole sections or single keys. A change elsewhere does not rerun it.
STAGE_KEYS: dict[str, tuple[str, ...]] = {
    "prep_fewshot": ("data.gsm8k_train", "data.gsm8k_hub_config", "fewshot.path", "fewshot.pool_size", "fewshot.seed"),
    "tokenize": (
        "model", "data.gsm8k_train", "data.gsm8k_hub_config", "data.refined_train",
        "data.strip_calculator_annotations", "data.train_limit", "fewshot.pool_size", "tokenize",
    ),
    "train": ("model", "quant", "lora", "train"),
    "infer_gsm8k": (
        "model", "data.gsm8k_test", "data.gsm8k_hub_config", "data.gsm8k_limit",
        "data.strip_calculator_annotations", "fewshot.k", "fewshot.pool_size", "tokenize.system_prompt", "eval",
    ),
    "infer_ailuminate": ("model", "data.ailuminate", "data.ailuminate_limit", "eval"),
    "score_safety": ("safety", "eval.chunk_size"),
    "summarize": ("model", "data", "lora", "train", "fewshot.k", "thresholds", "sweep", "grades"),
}

# Input files a stage writes itself (prep_fewshot draws the pool); Make follows them through the
# run folder's copy, so fingerprinting them would rerun their writer once after every draw.
WRITTEN_BY_STAGES = ("fewshot.path",)

LIBRARIES = ("torch", "transformers", "peft", "bitsandbytes", "datasets", "accelerate", "click", "jsonlines", "gguf")


def validate_run_name(name: str) -> str:
    if not RUN_NAME.fullmatch(name) or ".." in name:
        raise InputError(
            f"run name {name!r}: use letters, digits, '-', '_' and '.', starting with a letter or digit"
            " (no '/', no '..')"
        )
    return name


def run_dir(artifacts: str | Path, run: str) -> Path:
    return Path(artifacts) / f"run_{validate_run_name(run)}"


def write_run_config(config: Config, run: str, artifacts: str | Path, preset: str, overrides=(), smoke=False) -> Path:
    """Record the resolved config and refresh the per-stage parameter files; returns the run folder."""
    folder = run_dir(artifacts, run)
    values = config.to_dict()
    inputs = _local_inputs(config)
    for stage, keys in STAGE_KEYS.items():
        slice_ = {key: _lookup(values, key) for key in keys}
        files = {key: file_sha256(path) for key, path in inputs.items()
                 if _reads(keys, key) and key not in WRITTEN_BY_STAGES}
        write_if_changed(folder / "params" / f"{stage}.json", dumps_json({"params": slice_, "files": files}))
    record = {
        "run": run,
        "preset": str(preset),
        "overrides": list(overrides),
        "smoke": smoke,
        "config": values,
        "seeds": {"fewshot": config.fewshot.seed, "train": config.train.seed},
        "inputs": {key: {"path": str(path), "records": _records(path)} for key, path in inputs.items()},
        "git_commit": _git_commit(),
        "libraries": {name: _version(name) for name in LIBRARIES},
    }
    _write_record(folder / "config_resolved.json", record)
    return folder


def _write_record(path: Path, record: dict) -> None:
    # The date changes every call; keep the earlier file (and its date) when nothing else did.
    if path.is_file():
        previous = json.loads(path.read_text(encoding="utf-8"))
        previous.pop("date", None)
        if previous == record:
            return
    write_if_changed(path, dumps_json({**record, "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}))


def _local_inputs(config: Config) -> dict[str, Path]:
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


def _records(path: Path) -> int | None:
    if path.suffix == ".jsonl":
        return count_jsonl_records(path)
    if path.suffix == ".csv":
        return max(count_jsonl_records(path) - 1, 0)  # non-blank lines minus the header
    return None


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


@click.command()
@click.option("--preset", required=True, type=click.Path(), help="Preset YAML, e.g. presets/demo.yaml.")
@click.option("--run", "run", required=True, help="Run name; outputs go to <artifacts>/run_<run>/.")
@click.option("--set", "overrides", multiple=True, help="Override one key: section.key=value (repeatable).")
@click.option("--smoke", is_flag=True, help="Apply the preset's smoke sizes.")
@click.option("--artifacts", envvar="ARTIFACTS_DIR", default="artifacts", show_default=True, help="Artifact root.")
def main(preset, run, overrides, smoke, artifacts):
    """Resolve a preset and record it for RUN (called by the Makefile before each stage)."""
    try:
        validate_run_name(run)
        config = load_config(preset, overrides, smoke=smoke)
        write_run_config(config, run, artifacts, preset, overrides, smoke)
    except InputError as err:
        raise click.ClickException(str(err)) from None


if __name__ == "__main__":
    main()
