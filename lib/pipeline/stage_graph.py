"""The stage graph, declared once: for each stage its script, the file Make knows it by, the stages
whose outputs it reads, the config keys that change what it writes, how it is launched, and the
preflight checks of its inputs.

Everything that spells the stages reads this table: the Makefile's stage rules are generated from it
(lib/pipeline/stage_inputs.py, `make_rules`), params/<stage>.json holds each stage's `reads`
(lib/pipeline/run.py), the preflight runs each stage's `checks` (lib/checks/preflight.py), the GPU
check runs the chain in this order (lib/checks/gpu.py), and an evaluation's unfinished work is named
for its `task` (lib/evaluation.py). Adding a stage is a row here and its script in stages/.

A key a stage `reads` reruns it when it changes, unless the schema declares it runtime (it changes
no output: lib/pipeline/config.py); the same rule for every stage and for every fingerprint.
Standard library only: the Makefile generates its rules with the system Python, before any venv.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lib.pipeline import config
from lib.pipeline.artifacts import RunPaths
from lib.pipeline.config import Config


@dataclass(frozen=True)
class StageSpec:
    """One stage as the toolkit runs it."""

    name: str  # stages/<name>.py and its Make target
    help: str  # its `make help` line
    # The file Make knows it by (a folder's sentinel, written last), from the run's paths and its config
    # (None: the stage has no output to make for this config, as refine without data.refined_train).
    output: Callable[[RunPaths, Config | None], Path | None]
    reads: tuple[str, ...]  # config keys (section.key) or whole sections whose values change its output
    after: tuple[str, ...] = ()  # stages whose outputs it reads ("train": the finished adapter, none in a base run)
    after_if_present: tuple[str, ...] = ()  # stages whose outputs it reads when they exist (never makes them)
    order_only: tuple[str, ...] = ()  # Make targets to run before it that do not rerun it
    launch: bool = False  # several processes through accelerate when NPROC > 1
    extra_args: str = ""  # Make variables appended to its command line
    per_checkpoint: bool = False  # the sweep evaluates it for each checkpoint too (its output tagged _<checkpoint>)
    task: str | None = None  # an evaluation's unfinished work: run_<run>/partial_<task>
    checks: tuple[str, ...] = ()  # the preflight's checks of its inputs (lib/checks/preflight.py)
    chain: bool = True  # part of the chain `make summarize` runs (refine and export are asked for by name)
    make_rule: bool = True  # its rule is generated (refine's is the Makefile's own: built only when absent)


def _evaluation(stage: str) -> Callable[[RunPaths, Config | None], Path]:
    return lambda run, config: run.evaluation(stage, "preds")


def _refined(run: RunPaths, config: Config | None) -> Path | None:
    """refine's output: the refined training file the config names (none: refine is not needed)."""
    return Path(config.data.refined_train) if config and config.data.refined_train else None


STAGES: tuple[StageSpec, ...] = (
    StageSpec("prep_fewshot", "draw (or reuse) the fixed few-shot pool", lambda run, config: run.pool,
              reads=("data.gsm8k_train", "data.gsm8k_hub_config", "fewshot.path", "fewshot.pool_size", "fewshot.seed"),
              checks=("gsm8k_train",)),
    StageSpec("refine", "rejection-sampled training file -> data.refined_train or"
              " run_<run>/gsm8k_train_self-instruct.jsonl", _refined,
              reads=("model.base", "model.revision", "model.trust_remote_code", "data.gsm8k_train", "data.gsm8k_test",
                     "data.gsm8k_hub_config", "data.refined_train", "data.strip_calculator_annotations",
                     "fewshot.pool_size", "fewshot.k", "tokenize.system_prompt", "eval.stop_strings", "eval.dtype",
                     "refine", "hardware.device", "hardware.attention", "hardware.decode"),
              after=("prep_fewshot",), launch=True, task="refine", checks=("gsm8k_train", "refine_model"),
              chain=False, make_rule=False),
    StageSpec("tokenize", "tokenize training data with assistant-only labels", lambda run, config: run.tokenized,
              reads=("model.base", "model.revision", "model.trust_remote_code", "data.gsm8k_train",
                     "data.gsm8k_hub_config", "data.refined_train", "data.strip_calculator_annotations",
                     "data.train_limit", "fewshot.pool_size", "tokenize.max_seq_len", "tokenize.system_prompt"),
              after=("prep_fewshot", "refine"), checks=("training_data", "base_model")),
    StageSpec("train", "QLoRA fine-tuning -> run_<run>/adapter (resumes after a kill)",
              lambda run, config: run.training_complete,
              reads=("model", "quant", "lora", "train", "eval.adapter", "hardware.device"),
              after=("tokenize",), launch=True, extra_args="$(TRAIN_ARGS)", checks=("base_model", "trackers")),
    StageSpec("infer_gsm8k", "GSM8K answers, parsed and scored -> gsm8k_preds/metrics_<run>",
              _evaluation("infer_gsm8k"),
              reads=("model", "data.gsm8k_test", "data.gsm8k_hub_config", "data.strip_calculator_annotations",
                     "data.gsm8k_limit", "fewshot.pool_size", "fewshot.k", "tokenize.system_prompt", "quant", "eval",
                     "hardware.device", "hardware.attention", "hardware.decode"),
              after=("prep_fewshot", "train"), launch=True, per_checkpoint=True, task="gsm8k",
              checks=("gsm8k_test", "base_model")),
    StageSpec("infer_ailuminate", "AILuminate responses -> ailuminate_preds_<run>.jsonl",
              _evaluation("infer_ailuminate"),
              reads=("model", "data.ailuminate", "data.ailuminate_limit", "quant", "eval", "hardware.device",
                     "hardware.attention", "hardware.decode"),
              after=("train",), launch=True, per_checkpoint=True, task="ailuminate",
              checks=("ailuminate", "base_model")),
    StageSpec("score_safety", "safeguard labels and safety rate -> ailuminate_safety_<run> (e.g. make score_safety"
              " RUN=medium)", _evaluation("score_safety"),
              reads=("eval.chunk_size", "eval.adapter", "hardware.device", "hardware.attention", "hardware.decode",
                     "safety"),
              after=("infer_ailuminate",), launch=True, per_checkpoint=True, task="safety",
              checks=("safety_inputs", "safeguard")),
    StageSpec("summarize", "row in summary.csv, baseline check, indicative grades, reports",
              lambda run, config: run.summary,
              reads=("model.base", "data.gsm8k_train", "data.gsm8k_limit", "data.ailuminate_limit", "fewshot.k",
                     "quant.quantization", "lora.r", "lora.alpha", "train.epochs", "train.learning_rate",
                     "eval.adapter", "sweep.enabled", "sweep.last_n", "thresholds.accuracy", "thresholds.safety",
                     "grades.references"),
              after=("infer_gsm8k", "score_safety"), order_only=("sweep",)),
    StageSpec("export", "the model as evaluated (merged), one folder transformers and vLLM load -> run_<run>/merged/",
              lambda run, config: run.export_card(), reads=("model", "quant", "eval", "hardware.device"),
              after=("train",), after_if_present=("summarize",), checks=("base_model",), chain=False),
)


def stages() -> tuple[StageSpec, ...]:
    """Every stage, in the order they run (read at each call: the table is the one source)."""
    return STAGES


def stage(name: str) -> StageSpec:
    return next(spec for spec in STAGES if spec.name == name)


def chain() -> list[str]:
    """The stages `make summarize` runs, in order (what the GPU check runs directly)."""
    return [spec.name for spec in STAGES if spec.chain]


def evaluation_tasks() -> dict[str, str]:
    """Each evaluation stage's task name (its unfinished work: run_<run>/partial_<task>)."""
    return {spec.name: spec.task for spec in STAGES if spec.task and spec.per_checkpoint}


def stage_keys(name: str) -> tuple[str, ...]:
    """The keys `name` reads that change what it writes (runtime keys left out), in the order the
    schema declares them (a section read whole at its place): its params file, so a change elsewhere
    does not rerun it."""
    order = list(config.schema())

    def place(key: str) -> int:
        return order.index(key) if "." in key else next(i for i, name in enumerate(order)
                                                         if name.startswith(key + "."))

    return tuple(sorted(set(stage(name).reads) - set(config.RUNTIME_KEYS), key=place))
