"""Which judge this is: its architectures (safetensors only unless pickles are allowed), the
format, layout, verdict mode and Controversial rule it is run with, and its fingerprint."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from lib.errors import InputError
from lib.io import read_json_file
from lib.judge.formats import FORMATS, SAFE, UNSAFE, VERDICT_WORDS, default_layout, detect_format

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")


def judge_architectures(folder: Path, allow_pickle: bool) -> list[str]:
    """config.json's architectures, after checking the folder holds weights it may load."""
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise InputError(f"{folder}: safeguard model not found (expected an HF model folder with config.json and"
                         " *.safetensors weights, e.g. data/safeguard_model/)")
    files = [p.name for p in folder.iterdir()]
    if not any(name.endswith(".safetensors") for name in files):
        if any(name.endswith(PICKLE_SUFFIXES) for name in files) and not allow_pickle:
            raise InputError(f"{folder}: only pickle weights (.bin/.pt); convert them to safetensors, or set"
                             " safety.allow_pickle=true (--allow-pickle) for a folder you trust")
        if not allow_pickle:
            raise InputError(f"{folder}: no *.safetensors weights")
    architectures = read_json_file(config_file, "JSON (the model's config)").get("architectures") or []
    if not any(a.endswith(("ForSequenceClassification", "ForCausalLM", "ForConditionalGeneration"))
               for a in architectures):
        raise InputError(f"{config_file}: architectures {architectures} is neither a *ForSequenceClassification"
                         " nor a *ForCausalLM safeguard")
    return architectures


@dataclass
class JudgeSetup:
    """What was decided about the judge; recorded in the metrics."""

    guard_format: str
    why: str  # how the format was chosen
    layout: str
    verdict: str  # generate | constrained | argmax (classifiers)
    controversial: str  # how a Controversial verdict counts: unsafe | safe


def resolve_setup(safety, architectures: list[str], template: str | None, where: str) -> JudgeSetup:
    """Format, layout and verdict mode from the config, `auto` resolved from the folder."""
    if safety.guard_format == "auto":
        guard_format, why = detect_format(architectures, template, where)
    else:
        guard_format, why = safety.guard_format, "set by safety.guard_format"
    classifier = any(a.endswith("ForSequenceClassification") for a in architectures)
    if classifier != (guard_format == "classifier"):
        raise InputError(f"{where}: safety.guard_format {guard_format!r} does not fit a {architectures[0]}"
                         f" (classifiers take 'classifier'; generative guards one of {', '.join(FORMATS[:-1])})")
    layout = default_layout(guard_format, template) if safety.layout == "auto" else safety.layout
    if layout != "text" and not template:
        raise InputError(f"{where}: safety.layout {layout!r} needs a chat template, and the safeguard's tokenizer has"
                         " none; use safety.layout=text")
    if guard_format == "classifier" and layout != "text":
        raise InputError(f"safety.layout {layout!r}: a classifier reads one text (safety.layout=text)")
    verdict = "argmax" if guard_format == "classifier" else safety.verdict  # a classifier's class is its verdict
    if verdict == "constrained" and guard_format not in VERDICT_WORDS:
        raise InputError(f"safety.verdict 'constrained' needs a verdict at a fixed position; {guard_format!r} has none"
                         " (use safety.verdict=generate)")
    return JudgeSetup(guard_format, why, layout, verdict, safety.controversial)


def model_fingerprint(folder: Path) -> str:
    """sha256 of config.json and the weight files' names and sizes (fast, even for 8 GB guards)."""
    digest = hashlib.sha256((folder / "config.json").read_bytes())
    for path in sorted(folder.iterdir()):
        if path.name.endswith((".safetensors",) + PICKLE_SUFFIXES):
            digest.update(f"{path.name}:{path.stat().st_size}".encode())
    return digest.hexdigest()


def safe_class_index(id2label: dict, safe_label: str | None, where: str) -> int:
    """Index of the safe class of a 2-class classifier; anything ambiguous is an error."""
    labels = {int(k): str(v) for k, v in id2label.items()}
    if len(labels) != 2:
        raise InputError(f"{where}: the safeguard classifier has {len(labels)} labels {labels}; expected 2")
    if safe_label is not None:
        matches = [i for i, name in labels.items() if name == safe_label]
        if not matches:
            raise InputError(f"safety.safe_label {safe_label!r} is not one of the classifier's labels {labels}")
        return matches[0]
    by_name = {name.strip().lower(): i for i, name in labels.items()}
    if set(by_name) == {SAFE, UNSAFE}:
        return by_name[SAFE]
    raise InputError(f"{where}: cannot tell which label means safe from {labels}; set safety.safe_label"
                     " to the label that means safe")
