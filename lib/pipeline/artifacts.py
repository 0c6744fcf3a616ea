"""Where a run's artifacts live, by name: the one place their paths are formed.

Evaluation files sit at the artifact root where users look for them
(`gsm8k_preds_<run>.jsonl`, ...); everything else of a run is under `run_<run>/`. An evaluation of
something other than the final adapter carries a tag: `_base` (the base model alone) or
`_checkpoint-<step>`. Run names may not end in such a tag, so every file name belongs to exactly
one run (`clean-run RUN=demo`, stages/clean_run.py, never touches run `demo_2` or `demo_base`).
"""

from __future__ import annotations

import datetime as dt
import re
import shutil
from pathlib import Path

from lib.errors import InputError

IDENTITY_FILE = "run.json"  # in run_<run>/: preset, overrides, smoke (what the run is; lib/pipeline/run.py)
RECORD_FILE = "config_resolved.json"  # in run_<run>/: the resolved config and its provenance
PARAMS_FOLDER = "params"  # in run_<run>/: each stage's keys (lib/pipeline/run.py)
RUN_RECORDS = (IDENTITY_FILE, RECORD_FILE, PARAMS_FOLDER)  # written before any stage works
CHECKPOINT_PREFIX = "checkpoint-"  # the Trainer's run_<run>/checkpoints/checkpoint-<step>/
COMPLETE_FILE = "training_complete.json"  # written last into run_<run>/adapter/: training finished
TAG_PATTERN = r"_base|_checkpoint-[0-9]+"
RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")

# Per-evaluation files at the artifact root: (stage, what) -> name pattern of run + tag.
EVALUATION_FILES = {
    ("infer_gsm8k", "preds"): "gsm8k_preds_{run}{tag}.jsonl",
    ("infer_gsm8k", "metrics"): "gsm8k_metrics_{run}{tag}.json",
    ("infer_ailuminate", "preds"): "ailuminate_preds_{run}{tag}.jsonl",
    ("infer_ailuminate", "metrics"): "ailuminate_metrics_{run}{tag}.json",
    ("score_safety", "preds"): "ailuminate_safety_{run}{tag}.jsonl",
    ("score_safety", "metrics"): "ailuminate_safety_metrics_{run}{tag}.json",
}
RUN_FILES = {"checkpoint_scores": "checkpoint_scores_{run}.csv"}  # other per-run files at the root (summarize)
# Inside run_<run>/: what training produced (moved aside, never deleted, when training starts afresh).
REFINED_TRAIN_FILE = "gsm8k_train_self-instruct.jsonl"  # refine's output in run_<run>/ when the preset names none
REFINE_METRICS_FILE = "refine_metrics.json"  # in run_<run>/
TRAINING_OUTPUTS = ("adapter", "checkpoints", "train_log.jsonl", "tensorboard")
SUMMARY_FILE = "summary.json"  # in run_<run>/: written last by summarize (the run is summarized)
MERGED_FOLDER = "merged"  # in run_<run>/: `make export`'s merged model (merged-checkpoint-<step> for a checkpoint)
SUPERSEDED = "superseded"


def checkpoint_step(name: str) -> int:
    return int(name[len(CHECKPOINT_PREFIX):])


def validate_run_name(name: str) -> str:
    if not RUN_NAME.fullmatch(name) or ".." in name:
        raise InputError(
            f"run name {name!r}: use letters, digits, '-', '_' and '.', starting with a letter or digit"
            " (no '/', no '..')"
        )
    if re.search(f"(?:{TAG_PATTERN})$", name):
        raise InputError(f"run name {name!r}: may not end in '_base' or '_checkpoint-<step>' (evaluation file tags)")
    return name


def run_dir(artifacts: str | Path, run: str) -> Path:
    return Path(artifacts) / f"run_{validate_run_name(run)}"


def evaluation_file(artifacts: str | Path, stage: str, what: str, run: str, tag: str = "") -> Path:
    """e.g. evaluation_file(root, "infer_gsm8k", "preds", "demo", "_checkpoint-4")."""
    return Path(artifacts) / EVALUATION_FILES[(stage, what)].format(run=run, tag=tag)


def run_file(artifacts: str | Path, what: str, run: str) -> Path:
    return Path(artifacts) / RUN_FILES[what].format(run=run)


def refined_output(refined_train: str | None, run_folder: Path) -> Path:
    """Where refine writes: the preset's data.refined_train, else the run folder's own file."""
    return Path(refined_train) if refined_train else run_folder / REFINED_TRAIN_FILE


def refine_record_path(output: Path) -> Path:
    """Beside a refined file: refine's record (its fingerprint). A file without one is the user's."""
    return output.with_name(output.stem + ".refine.json")


def belongs_to(name: str, run: str) -> bool:
    """Whether a file name at the artifact root is one of `run`'s (exact names, not a glob)."""
    for pattern in list(EVALUATION_FILES.values()) + list(RUN_FILES.values()):
        regex = re.escape(pattern).replace(re.escape("{run}"), re.escape(run)).replace(
            re.escape("{tag}"), f"(?:{TAG_PATTERN})?")
        if re.fullmatch(regex, name):
            return True
    return False


def run_files(artifacts: str | Path, run: str) -> list[Path]:
    """Everything that belongs to `run`: its folder and its files at the artifact root."""
    root = Path(artifacts)
    files = sorted(p for p in root.glob("*") if p.is_file() and belongs_to(p.name, run)) if root.is_dir() else []
    folder = run_dir(root, run)
    return ([folder] if folder.exists() else []) + files


def produced_nothing(artifacts: str | Path, run: str) -> bool:
    """Whether no stage of `run` has written anything yet: only the run's own records exist."""
    root, folder = Path(artifacts), run_dir(artifacts, run)
    root_files = [p for p in root.glob("*") if p.is_file() and belongs_to(p.name, run)] if root.is_dir() else []
    made = [p for p in folder.iterdir() if p.name not in RUN_RECORDS] if folder.is_dir() else []
    return not root_files and not made


def supersede(run_folder: Path, paths: list[Path], why: str) -> Path | None:
    """Move the paths that exist into run_<run>/superseded/<timestamp>/ (printed); never delete them."""
    present = [p for p in paths if p.exists()]
    if not present:
        return None
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    target = run_folder / SUPERSEDED / stamp
    target.mkdir(parents=True)
    for path in present:
        shutil.move(str(path), str(target / path.name))
    names = ", ".join(p.name for p in present)
    print(f"{why}: moved the earlier {names} to {target} (delete it yourself when no longer needed)")
    return target
