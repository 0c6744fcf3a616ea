"""A run: its identity, its folder under the artifact root, and its recorded config.

A run remembers what it is. The first stage of a run writes run_<run>/run.json (preset file,
overrides, smoke flag); a later call for the same run that names no preset uses it, and one that
does (or adds overrides) must resolve to the same config, or it stops before any work with the
keys that differ. `--reconfigure` (RECONFIGURE=1) accepts the change; the stages then move what
they replace into run_<run>/superseded/ (see lib/pipeline/artifacts.py) rather than deleting it.

`write_run_config` writes three more things into artifacts/run_<run>/:
- config_resolved.json: the whole resolved config with git commit, date, seeds, library versions
  and the local input files with their record counts (no environment, so no token, ever);
- params/<stage>.json: only the keys each stage reads, plus fingerprints of its local input
  files, each rewritten only when its content changes (lib/pipeline/params.py). Make targets depend
  on these, so changing a preset value reruns from the first stage that reads it and nothing earlier;
- params/make.mk: the few facts Make itself needs (the refined training file to wait for, a base run,
  a sweep).

stages/check.py --record is what the Makefile calls before stages (it records, then runs the preflight).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import importlib.metadata
import json
import subprocess
from pathlib import Path

import click

from lib.errors import InputError
from lib.io import atomic_write_json, count_jsonl_records, dumps_json, write_if_changed
from lib.pipeline.artifacts import RunPaths
from lib.pipeline.config import Config, without_runtime_keys
from lib.pipeline.params import local_inputs, write_params
from lib.pipeline.presets import load_config, split_overrides

DEFAULT_PRESET = "presets/demo.yaml"  # when neither a preset nor a run is named
SET_VARIABLE = "MAKE_SET"  # the environment variable through which the Makefile hands SET over, as typed

LIBRARIES = ("torch", "transformers", "peft", "bitsandbytes", "datasets", "accelerate", "click", "jsonlines", "gguf")


@dataclasses.dataclass
class Identity:
    """What a run is: the preset file, the overrides on top of it, and whether smoke sizes apply."""

    preset: str
    overrides: list[str]
    smoke: bool


def resolve_run(run: str | None, preset: str | None, overrides=(), smoke: bool | None = None,
                artifacts: str | Path = "artifacts", reconfigure: bool = False) -> tuple[str, Config, Identity]:
    """(run, config, identity) for an invocation, checked against what the run already is.

    Unnamed parts come from the run's record: no preset = the recorded one, overrides are added to
    the recorded ones (a key given again takes the new value), no smoke flag = the recorded flag.
    A resolved config that differs from the recorded one is an InputError listing each key
    (old -> new), unless `reconfigure`.
    """
    if run is None:
        preset = preset or DEFAULT_PRESET
    run = run_name(run, preset)
    paths = RunPaths(Path(artifacts), run)
    recorded = read_identity(paths)
    if recorded is None:
        if preset is None:
            raise InputError(_no_such_run(run, artifacts))
        identity = Identity(str(preset), list(overrides), bool(smoke))
    else:
        identity = Identity(str(preset or recorded.preset), _merge_overrides(recorded.overrides, overrides),
                            recorded.smoke if smoke is None else smoke)
    config = load_config(identity.preset, identity.overrides, smoke=identity.smoke)
    # A run no stage has worked for yet (its first call failed, say offline) takes new settings as given.
    if recorded is not None and not reconfigure and not paths.produced_nothing():
        changes = config_changes(_recorded_config(paths), config.to_dict())
        if changes:
            raise InputError(_conflict(run, changes))
    return run, config, identity


def run_name(run: str | None, preset: str | None) -> str:
    """The run an invocation names: --run, else the preset's file name (the demo's without either)."""
    return run or Path(preset or DEFAULT_PRESET).stem


def with_remembered_overrides(message: str, run: str | None, given=(), artifacts: str | Path = "artifacts") -> str:
    """An error message, plus the overrides the run remembers from earlier calls (not given in this
    one) whose key or value the message names: a rerun that fails again says where the value came from."""
    try:
        paths = RunPaths(Path(artifacts), run) if run else None
    except InputError:  # the run name itself is what is wrong
        return message
    recorded = read_identity(paths) if paths else None
    given_keys = {item.partition("=")[0].strip() for item in given}
    named = [item for item in (recorded.overrides if recorded else [])
             if item.partition("=")[0].strip() not in given_keys
             and any(part.strip() and part.strip() in message for part in item.partition("=")[::2])]
    if not named:
        return message
    return (f"{message} (run {run!r} remembers SET={' '.join(named)} from an earlier call, in"
            f" {paths.identity}: give that key another value with SET=...)")


def read_identity(run: RunPaths) -> Identity | None:
    path = run.identity
    if not path.is_file():
        return None
    values = json.loads(path.read_text(encoding="utf-8"))
    return Identity(values["preset"], list(values["overrides"]), bool(values["smoke"]))


def _recorded_config(run: RunPaths) -> dict:
    path = run.record
    return json.loads(path.read_text(encoding="utf-8"))["config"] if path.is_file() else {}


def _merge_overrides(old: list[str], new) -> list[str]:
    merged = {item.partition("=")[0].strip(): item for item in old}
    merged.update({item.partition("=")[0].strip(): item for item in new})
    return list(merged.values())


def config_changes(old: dict, new: dict) -> list[tuple[str, object, object]]:
    """(section.key, old, new) for every key whose value differs; keys the record predates, and the
    runtime keys that change no output, are skipped."""
    changes = []
    for section, values in without_runtime_keys(new).items():
        for key, value in values.items():
            if section in old and key in old[section] and old[section][key] != value:
                changes.append((f"{section}.{key}", old[section][key], value))
    return changes


def _conflict(run: str, changes) -> str:
    lines = [f"run {run!r} was made with other settings; this call would change:"]
    lines += [f"  {key}: {old!r} -> {new!r}" for key, old, new in changes]
    lines.append(f"Nothing was run. Use a new RUN name for a new run, or RECONFIGURE=1 (--reconfigure) to change"
                 f" run {run!r}: what it replaces moves to run_{run}/superseded/")
    return "\n".join(lines)


def _no_such_run(run: str, artifacts) -> str:
    start = (f"`make {run}`" if (Path("presets") / f"{run}.yaml").is_file()
             else f"`make <target> RUN={run} PRESET=<preset>`")
    return (f"run {run!r} does not exist yet (no {RunPaths(Path(artifacts), run).identity}): start it with"
            f" {start}, or name its preset (PRESET=..., --preset)")


def write_run_config(config: Config, run: str, artifacts: str | Path, identity: Identity,
                     reconfigure: bool = False) -> RunPaths:
    """Record the identity (first call, or reconfigure), the resolved config and the per-stage
    parameter files; returns the run's paths."""
    paths = RunPaths(Path(artifacts), run)
    if reconfigure or not paths.identity.is_file() or paths.produced_nothing():
        atomic_write_json(paths.identity, dataclasses.asdict(identity))
    write_params(config, paths.params_folder)
    record = {
        "run": run,
        **dataclasses.asdict(read_identity(paths)),
        "config": config.to_dict(),
        "seeds": {"fewshot": config.fewshot.seed, "train": config.train.seed},
        "inputs": {key: {"path": str(path), "records": _records(path)} for key, path in local_inputs(config).items()},
        "git_commit": _git_commit(),
        "libraries": {name: _version(name) for name in LIBRARIES},
    }
    _write_record(paths.record, record)
    return paths


def _write_record(path: Path, record: dict) -> None:
    # The date changes every call; keep the earlier file (and its date) when nothing else did.
    if path.is_file():
        previous = json.loads(path.read_text(encoding="utf-8"))
        previous.pop("date", None)
        if previous == record:
            return
    write_if_changed(path, dumps_json({**record, "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}))


def _records(path: Path) -> int | None:
    if path.suffix == ".jsonl":
        return count_jsonl_records(path)
    if path.suffix == ".csv":
        return max(count_jsonl_records(path) - 1, 0)  # non-blank lines minus the header
    return None


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True,
                               timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def run_options(func):
    """--preset/--run/--set/--sets/--smoke/--reconfigure/--artifacts, shared by the stages and the helpers
    Make calls. The function gets `overrides`: the --set items, then the --sets string's (Make's SET,
    handed over whole through the environment: no quoting of the command line to get wrong)."""

    @functools.wraps(func)
    def with_overrides(*args, overrides=(), override_text="", **options):
        try:
            overrides = (*overrides, *split_overrides(override_text or ""))
        except InputError as err:
            raise click.ClickException(str(err)) from None
        return func(*args, overrides=overrides, **options)

    options = [
        click.option("--preset", default=None, type=click.Path(),
                     help=f"Preset YAML. Default: the run's recorded preset, or {DEFAULT_PRESET} for a new run."),
        click.option("--run", "run", default=None, help="Run name (default: the preset's file name)."),
        click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE",
                     help="Override one config key (repeatable), e.g. --set train.epochs=2."),
        click.option("--sets", "override_text", envvar=SET_VARIABLE, default="", metavar="'KEY=VALUE ...'",
                     help=f"Overrides as one string, split by shell quoting rules (env {SET_VARIABLE}: Make's SET)."),
        click.option("--smoke/--no-smoke", default=None, help="Use the preset's smoke sizes (default: as recorded)."),
        click.option("--reconfigure", is_flag=True, help="Accept settings that differ from the run's recorded ones."),
        click.option("--artifacts", envvar="ARTIFACTS_DIR", default="artifacts", show_default=True,
                     type=click.Path(), help="Artifact root (env ARTIFACTS_DIR)."),
    ]
    for option in reversed(options):
        with_overrides = option(with_overrides)
    return with_overrides
