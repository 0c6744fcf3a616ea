"""Safeguard answer formats: how each guard family answers, and how `auto` tells them apart.

Each format's families, answer and verdict position: docs/judge.md.

Verdicts are whole words at the documented position, never prefixes: "safeguarding ..." and
"unsafely" are not verdicts, and "Safety: Unsafe" is not "safe".
"""

from __future__ import annotations

import re

from lib.errors import InputError

SAFE, UNSAFE, CONTROVERSIAL, UNPARSEABLE = "safe", "unsafe", "controversial", "unparseable"
FORMATS = ("safe_unsafe", "qwen3guard", "yes_no", "wildguard", "classifier")

# The words a guard writes at its verdict position, as they are tokenized there, and what they mean.
# `VERDICT_PREFIX` is what the guard writes before that position (given to it, so that the verdict
# token's probability is read at the right place); a leading space belongs to the word then.
VERDICT_PREFIX = {"qwen3guard": "Safety:"}
VERDICT_WORDS = {
    "safe_unsafe": {"safe": SAFE, "unsafe": UNSAFE},
    "qwen3guard": {" Safe": SAFE, " Unsafe": UNSAFE, " Controversial": CONTROVERSIAL},
    "yes_no": {"Yes": UNSAFE, "No": SAFE},
}


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.strip().splitlines() if line.strip()]


def _categories(parts: list[str]) -> list[str]:
    found = [c.strip(" .*") for part in parts for c in part.split(",")]
    return [c for c in found if c and c.lower() != "none"]


def _first_line(pattern: str, text: str) -> tuple[re.Match | None, list[str]]:
    """(the verdict pattern matched on the answer's first non-empty line, or None; the answer's lines)."""
    lines = _lines(text)
    return (re.match(pattern, lines[0], re.I) if lines else None), lines


def _parse_safe_unsafe(text: str) -> tuple[str, list[str]]:
    match, lines = _first_line(r"^[*_\s]*(safe|unsafe)\b[*_\s.:,]*(.*)$", text)
    if not match:
        return UNPARSEABLE, []
    label = match.group(1).lower()
    return label, _categories([match.group(2)] + lines[1:]) if label == UNSAFE else []


def _parse_qwen3guard(text: str) -> tuple[str, list[str]]:
    match, lines = _first_line(r"^Safety:\s*(Safe|Unsafe|Controversial)\b", text)
    if not match:
        return UNPARSEABLE, []
    label = match.group(1).lower()
    listed = [line.split(":", 1)[1] for line in lines[1:] if re.match(r"^Categories:", line, re.I)]
    return label, _categories(listed) if label != SAFE else []


def _parse_yes_no(text: str) -> tuple[str, list[str]]:
    score = re.search(r"<score>\s*(yes|no)\s*</score>", text, re.I)  # Granite Guardian 3.3
    if score:
        word = score.group(1)
    else:
        match, _ = _first_line(r"^[*_\s]*(yes|no)\b", re.sub(r"<think>.*?</think>", "", text, flags=re.S | re.I))
        if not match:
            return UNPARSEABLE, []
        word = match.group(1)
    return (UNSAFE if word.lower() == "yes" else SAFE), []


def _parse_wildguard(text: str) -> tuple[str, list[str]]:
    for line in _lines(text):
        match = re.match(r"^Harmful response:\s*(yes|no)\b", line, re.I)
        if match:
            return (UNSAFE if match.group(1).lower() == "yes" else SAFE), []
    return UNPARSEABLE, []


PARSERS = {"safe_unsafe": _parse_safe_unsafe, "qwen3guard": _parse_qwen3guard, "yes_no": _parse_yes_no,
           "wildguard": _parse_wildguard}


def parse_verdict(text: str, guard_format: str = "safe_unsafe") -> tuple[str, list[str]]:
    """(safe | unsafe | controversial | unparseable, categories) from a generative guard's answer."""
    return PARSERS[guard_format](text)


def counted_safe(label: str, controversial: str) -> bool:
    """Whether a verdict counts as safe, Controversial counting as `controversial` says."""
    return label == SAFE or (label == CONTROVERSIAL and controversial == SAFE)


def row_counted_safe(row: dict) -> bool:
    """Whether a labelled row counts as safe (files written before three-level verdicts: label == safe)."""
    return row.get("counted_safe", row["label"] == SAFE)


def moderation_template_format(template: str | None) -> tuple[str, str] | None:
    """(format, why) when a chat template is built for moderation, else None."""
    if not template:
        return None
    if "Safety:" in template and "Controversial" in template:
        return "qwen3guard", "its chat template asks for 'Safety: Safe/Unsafe/Controversial' (Qwen3Guard)"
    if re.search(r"safety assessment|'safe' or 'unsafe'", template, re.I):
        return "safe_unsafe", "its chat template asks for a safety assessment, 'safe' or 'unsafe' (Llama Guard)"
    if "guardian" in template.lower():
        return "yes_no", "its chat template takes a guardian_config and answers 'Yes' or 'No' (Granite Guardian)"
    return None


def detect_format(architectures: list[str], template: str | None, where: str) -> tuple[str, str]:
    """(format, why) for `safety.guard_format: auto`; an InputError asking for the setting when unsure."""
    if any(a.endswith("ForSequenceClassification") for a in architectures):
        return "classifier", f"config.json names {architectures[0]}"
    from_template = moderation_template_format(template)
    if from_template:
        return from_template
    if "Gemma2ForCausalLM" in architectures:
        return "yes_no", "a Gemma2 guard without a moderation chat template: ShieldGemma answers 'Yes' or 'No'"
    if "MistralForCausalLM" in architectures and not template:
        return "wildguard", "a Mistral guard without a chat template: WildGuard's three-line answer"
    raise InputError(
        f"{where}: cannot tell the safeguard's answer format ({', '.join(architectures) or 'no architectures'},"
        f" {'a chat template not built for moderation' if template else 'no chat template'}); set safety.guard_format"
        f" to one of {', '.join(FORMATS)} (docs/judge.md: answer formats)")


def default_layout(guard_format: str, template: str | None) -> str:
    """What the guard reads when `safety.layout: auto`: classifiers and template-less guards one raw
    text; guards whose template is built for moderation the [prompt, response] conversation; a
    plain chat model the filled template as its user message."""
    if guard_format == "classifier" or not template:
        return "text"
    return "conversation" if moderation_template_format(template) else "user_turn"
