"""The preflight: every input the stages still to run will read, checked before the first one works.

A run on a GPU node should not find a missing safeguard folder after an hour of training. For the
Make goals of a call, `stages_to_run` names the stages whose outputs are not there yet (a stage
with its output in place is not asked about, nor what only it reads), and `problems` runs each of
their checks on the resolved config: files read as the stages read them, the safeguard folder and
format, the trackers, hub models and datasets (in the HF cache, or reachable with the token there
is). Each problem is one line; all of them are reported at once.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path

from lib.errors import InputError, error_line
from lib.hub import ANY_PRESET, EMBEDDED_PREFIX, hub_errors, is_hub_id, source_kind
from lib.io import read_json_file
from lib.judge.inputs import check_template, read_guidelines
from lib.judge.setup import judge_architectures, resolve_setup
from lib.pipeline.artifacts import RunPaths
from lib.pipeline.config import Config
from lib.pipeline.stage_graph import stage, stages
from lib.tasks.data import gsm8k_source_kind, load_ailuminate, load_gsm8k, training_source

GOALS = (*(spec.name for spec in stages()), "sweep", "check")


def stages_to_run(goals: list[str], config: Config, run: RunPaths) -> list[str]:
    """The stages the goals need whose outputs are missing, in the graph's order (lib/pipeline/stage_graph.py;
    `check` and `sweep`: the whole chain; a base run trains nothing; refine only when the refined
    file is absent)."""
    skipped = {"tokenize", "train"} if config.eval.adapter == "none" else set()
    pending: set[str] = set()

    def visit(name: str) -> None:
        output = stage(name).output(run, config)
        if name in skipped or name in pending or output is None or output.exists():
            return
        pending.add(name)
        for upstream in stage(name).after:
            visit(upstream)

    for goal in goals:
        for name in ("summarize", "train") if goal in ("check", "sweep") else (goal,):
            visit(name)
    return [spec.name for spec in stages() if spec.name in pending]


def problems(config: Config, stages: list[str], preset: str = "<preset>") -> list[str]:
    """One line per problem with the inputs `stages` read; empty when all of them are usable. A fix
    that is `make download` names `preset`."""
    found = []
    _reach.cache_clear()
    for check in dict.fromkeys(check for name in stages for check in stage(name).checks):
        try:
            _CHECKS[check](config)
        except InputError as error:
            found.append(str(error).replace(ANY_PRESET, f"PRESET={preset}"))
    return list(dict.fromkeys(found))  # two checks reading one file report it once


def _gsm8k_train(config: Config) -> None:
    _dataset(config.data.gsm8k_train, "train", "data.gsm8k_train")


def _gsm8k_test(config: Config) -> None:
    _dataset(config.data.gsm8k_test, "test", "data.gsm8k_test")


def _dataset(source: str, split: str, what: str) -> None:
    if gsm8k_source_kind(source, what) == "file":
        load_gsm8k(source, split, what=what)
    else:
        _hub_repo(source, what, None, repo_type="dataset")


def _training_data(config: Config) -> None:
    # A refined file that is absent is refine's to build (stages_to_run then lists refine); GSM8K
    # train is read either way, to leave the few-shot pool out.
    refined = config.data.refined_train
    if refined and Path(refined).is_file():
        _dataset(training_source(config.data.gsm8k_train, refined), "train", "data.refined_train")
    _gsm8k_train(config)


def _base_model(config: Config) -> None:
    _model(config.model.base, "model.base", config.model.revision)
    base = Path(config.model.base)
    if config.model.base.startswith(EMBEDDED_PREFIX) or is_hub_id(config.model.base):
        return
    if folder_chat_template(base) is None:
        # tokenize renders every example with it; evaluation every prompt (lib/models.load_tokenizer)
        raise InputError(f"model.base {base}: its tokenizer has no chat template (an instruct model is expected;"
                         " docs/your-models.md)")
    contents = tuple(sorted((path.name, path.stat().st_mtime_ns) for path in base.iterdir()))
    problem = _tokenizer_problem(str(base), contents, config.model.trust_remote_code)
    if problem is not None:
        raise InputError(f"model.base {base}: its tokenizer does not load ({problem})")


@functools.lru_cache
def _tokenizer_problem(folder: str, contents: tuple, trust_remote_code: bool) -> str | None:
    """Why a local folder's tokenizer does not instantiate (the stages load it first), or None; asked
    once per folder and `contents` (its files and their times: transformers' import and the load cost
    seconds, paid only for a local base)."""
    from transformers import AutoTokenizer

    try:
        AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code)
    except Exception as error:  # whatever stops it stops tokenize: one line naming it
        return error_line(error)
    return None


def _refine_model(config: Config) -> None:
    if config.refine.model:
        _model(config.refine.model, "refine.model", None)


def _trackers(config: Config) -> None:
    from lib.training.tracking import TENSORBOARD, check_trackers

    # TensorBoard is a pinned requirement; asking transformers about the others costs seconds of imports.
    if set(config.train.report_to) - {TENSORBOARD}:
        check_trackers(config.train.report_to)


def _ailuminate(config: Config) -> None:
    load_ailuminate(config.data.ailuminate)


def _safety_inputs(config: Config) -> None:
    read_guidelines(config.safety.safety_prompt)
    check_template(config.safety.template)


def _safeguard(config: Config) -> None:
    safety = config.safety
    if safety.safeguard_model.startswith(EMBEDDED_PREFIX) or is_hub_id(safety.safeguard_model):
        _model(safety.safeguard_model, "safety.safeguard_model", None)
        return
    folder = Path(safety.safeguard_model)
    architectures = judge_architectures(folder, safety.allow_pickle)
    resolve_setup(safety, architectures, folder_chat_template(folder), str(folder))


def folder_chat_template(folder: Path) -> str | None:
    """A model folder's chat template as its tokenizer would read it, without loading the tokenizer."""
    for name in ("chat_template.jinja", "chat_template.json"):
        path = folder / name
        if path.is_file():
            return read_json_file(path)["chat_template"] if name.endswith(".json") else path.read_text(encoding="utf-8")
    config = folder / "tokenizer_config.json"
    if config.is_file():
        template = read_json_file(config, "JSON (the tokenizer's config)").get("chat_template")
        if isinstance(template, list):  # named templates: [{"name": ..., "template": ...}]
            template = "\n".join(item.get("template", "") for item in template if isinstance(item, dict))
        return template or None
    return None


def _model(name: str, what: str, revision: str | None) -> None:
    """A model is usable when embedded, a local folder with config.json, or a hub id that is cached
    or reachable (gated ones with a token that may read them)."""
    if name.startswith(EMBEDDED_PREFIX):
        return
    kind = source_kind(name, what)
    if kind == "file":
        raise InputError(f"{what} {name}: a file; expected a model folder (config.json and *.safetensors) or a hub"
                         " id like owner/name")
    if kind == "folder":
        if not (Path(name) / "config.json").is_file():
            raise InputError(f"{what} {name}: not a model folder (no config.json) and not a hub id like owner/name")
        read_json_file(Path(name) / "config.json", "JSON (the model's config)")
        return
    _hub_repo(name, what, revision, repo_type="model")


def _hub_repo(name: str, what: str, revision: str | None, repo_type: str) -> None:
    if _cached(name, revision, repo_type):
        return
    failure = _reach(name, repo_type)
    if failure is not None:
        with hub_errors(name, what, revision):
            raise failure


@functools.lru_cache
def _reach(name: str, repo_type: str) -> Exception | None:
    """Why the hub will not give this repository (None: it will); asked once per repository, as
    GSM8K's train and test splits are one dataset."""
    from huggingface_hub import HfApi

    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false"):
        return OSError("not cached and HF_HUB_OFFLINE is set")
    try:
        HfApi().auth_check(name, repo_type=repo_type)  # existence, gating and the token's access, no download
    except Exception as error:  # classified by hub_errors: a hub failure becomes one line, anything else raises
        return error
    return None


def _cached(name: str, revision: str | None, repo_type: str) -> bool:
    """A model's config.json in the HF cache (at the revision); a dataset's folder in the hub's or
    the datasets library's cache (where `make download` left it)."""
    from huggingface_hub import constants, try_to_load_from_cache

    if repo_type == "model":
        return isinstance(try_to_load_from_cache(name, "config.json", revision=revision), str)
    hub_folder = Path(constants.HF_HUB_CACHE) / f"datasets--{name.replace('/', '--')}"
    datasets_cache = Path(os.environ.get("HF_DATASETS_CACHE") or Path(constants.HF_HOME) / "datasets")
    return hub_folder.is_dir() or (datasets_cache / name.replace("/", "___")).is_dir()


# The checks a stage's row in the stage graph names, by name.
_CHECKS: dict[str, Callable[[Config], None]] = {
    "gsm8k_train": _gsm8k_train, "gsm8k_test": _gsm8k_test, "training_data": _training_data, "ailuminate": _ailuminate,
    "base_model": _base_model, "refine_model": _refine_model, "trackers": _trackers,
    "safety_inputs": _safety_inputs, "safeguard": _safeguard,
}
