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
from dataclasses import dataclass
from pathlib import Path

from lib.errors import InputError

IDENTITY_FILE = "run.json"  # in run_<run>/: preset, overrides, smoke (what the run is; lib/pipeline/run.py)
RECORD_FILE = "config_resolved.json"  # in run_<run>/: the resolved config and its provenance
PARAMS_FOLDER = "params"  # in run_<run>/: each stage's keys (lib/pipeline/run.py)
MAKE_VARS_FILE = "make.mk"  # in params/: what the Makefile includes of the run
LOCK_FILE = ".lock"  # in run_<run>/: held by the command writing the run (lib/pipeline/lock.py)
RUN_RECORDS = (IDENTITY_FILE, RECORD_FILE, PARAMS_FOLDER, LOCK_FILE)  # written before any stage works
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
REFINED_TRAIN_FILE = "gsm8k_train_self-instruct.jsonl"  # refine's output in run_<run>/ when the preset names none
REFINE_METRICS_FILE = "refine_metrics.json"  # in run_<run>/
SUMMARY_FILE = "summary.json"  # in run_<run>/: written last by summarize (the run is summarized)
REPORT_FILE = "report.md"  # in run_<run>/ (the run's report) and at the root (the index of all runs)
SUMMARY_CSV = "summary.csv"  # at the root: one row per run
MERGED_FOLDER = "merged"  # in run_<run>/: `make export`'s merged model (merged-checkpoint-<step> for a checkpoint)
EXPORT_CARD = "README.md"  # in the export's folder: its card, written last (what Make knows the export by)
SUPERSEDED = "superseded"
MODELS_FOLDER = "models"  # at the root: the embedded models converted once (MODELS_DIR overrides it)
COMPARISON = "compare_{name}"  # at the root: `make compare`'s .json, .csv, .md and .png


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


@dataclass(frozen=True)
class RunPaths:
    """Every path of one run, named by what it holds: the one place a run's file names are formed
    (a test finds no artifact name spelled elsewhere in lib/ or stages/)."""

    artifacts: Path  # the artifact root
    name: str  # the run's name

    def __post_init__(self):
        validate_run_name(self.name)

    @property
    def folder(self) -> Path:
        return Path(self.artifacts) / f"run_{self.name}"

    # What the run is, and what each stage reads of its config (lib/pipeline/run.py)
    @property
    def identity(self) -> Path:
        return self.folder / IDENTITY_FILE

    @property
    def record(self) -> Path:
        return self.folder / RECORD_FILE

    @property
    def params_folder(self) -> Path:
        return self.folder / PARAMS_FOLDER

    def params(self, stage: str) -> Path:
        return self.params_folder / f"{stage}.json"

    @property
    def lock(self) -> Path:
        return self.folder / LOCK_FILE

    @property
    def make_vars(self) -> Path:
        return self.params_folder / MAKE_VARS_FILE

    # Data and training
    @property
    def pool(self) -> Path:
        return self.folder / "fewshot.jsonl"  # the few-shot pool this run used

    @property
    def tokenized(self) -> Path:
        return self.folder / "train_tokenized.jsonl"

    @property
    def tokenized_meta(self) -> Path:
        return self.folder / "train_tokenized.meta.json"

    @property
    def adapter(self) -> Path:
        return self.folder / "adapter"

    @property
    def adapter_staging(self) -> Path:
        return self.folder / ".adapter.partial"  # the final adapter while it is written

    @property
    def training_complete(self) -> Path:
        return self.adapter / COMPLETE_FILE

    @property
    def checkpoints(self) -> Path:
        return self.folder / "checkpoints"

    def checkpoint(self, name: str) -> Path:
        return self.checkpoints / name

    @property
    def train_log(self) -> Path:
        return self.folder / "train_log.jsonl"

    @property
    def tensorboard(self) -> Path:
        return self.folder / "tensorboard"

    @property
    def training_outputs(self) -> list[Path]:
        """What training produced: moved aside together, never deleted, when it starts afresh."""
        return [self.adapter, self.checkpoints, self.train_log, self.tensorboard]

    def refined_output(self, refined_train: str | None) -> Path:
        """Where refine writes: the preset's data.refined_train, else the run folder's own file."""
        return Path(refined_train) if refined_train else self.folder / REFINED_TRAIN_FILE

    @property
    def refine_metrics(self) -> Path:
        return self.folder / REFINE_METRICS_FILE

    # Evaluations: files at the artifact root, and the run's folder of unfinished work for each
    def evaluation(self, stage: str, what: str, tag: str = "") -> Path:
        """e.g. evaluation("infer_gsm8k", "preds", "_checkpoint-4") -> <root>/gsm8k_preds_<run>_checkpoint-4.jsonl."""
        return Path(self.artifacts) / EVALUATION_FILES[(stage, what)].format(run=self.name, tag=tag)

    def partial(self, task: str, tag: str = "") -> Path:
        """Resumable work of one task (gsm8k, ailuminate, safety, refine): removed once its result is written."""
        return self.folder / f"partial_{task}{tag}"

    # Summaries, reports, exports
    @property
    def summary(self) -> Path:
        return self.folder / SUMMARY_FILE

    @property
    def report(self) -> Path:
        return self.folder / REPORT_FILE

    def plot(self, name: str) -> Path:
        return self.folder / f"{name}.png"

    def run_file(self, what: str) -> Path:
        return Path(self.artifacts) / RUN_FILES[what].format(run=self.name)

    def merged(self, checkpoint: str | None = None) -> Path:
        return self.folder / (MERGED_FOLDER + (f"-{checkpoint}" if checkpoint else ""))

    def export_card(self, checkpoint: str | None = None) -> Path:
        return self.merged(checkpoint) / EXPORT_CARD

    @property
    def superseded(self) -> Path:
        return self.folder / SUPERSEDED

    def is_summarized(self) -> bool:
        return self.summary.is_file()

    def root_files(self) -> list[Path]:
        """The run's files at the artifact root, by exact name (run `demo_2`'s are not `demo`'s)."""
        root = Path(self.artifacts)
        return sorted(p for p in root.glob("*") if p.is_file() and belongs_to(p.name, self.name)) \
            if root.is_dir() else []

    def files(self) -> list[Path]:
        """Everything that belongs to the run: its folder and its files at the artifact root."""
        return ([self.folder] if self.folder.exists() else []) + self.root_files()

    def produced_nothing(self) -> bool:
        """Whether no stage has written anything yet: only the run's own records exist."""
        made = [p for p in self.folder.iterdir() if p.name not in RUN_RECORDS] if self.folder.is_dir() else []
        return not made and not self.root_files()


def comparison_stem(artifacts: Path, name: str) -> Path:
    """compare_<name> at the artifact root; its files add .json, .csv, .md and .png."""
    return Path(artifacts) / COMPARISON.format(name=name)


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


def supersede(run: RunPaths, paths: list[Path], why: str) -> Path | None:
    """Move the paths that exist into run_<run>/superseded/<timestamp>/ (printed); never delete them."""
    present = [p for p in paths if p.exists()]
    if not present:
        return None
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    target = run.superseded / stamp
    target.mkdir(parents=True)
    for path in present:
        shutil.move(str(path), str(target / path.name))
    names = ", ".join(p.name for p in present)
    print(f"{why}: moved the earlier {names} to {target} (delete it yourself when no longer needed)")
    return target
