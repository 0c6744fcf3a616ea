"""GSM8K text conventions: calculator annotations, the `#### N` final answer, question matching."""

from __future__ import annotations

import re

# `<<48/2=24>>` marks a calculator call in GSM8K solutions; the visible result follows it.
CALCULATOR_ANNOTATION = re.compile(r"<<[^<>]*>>")
FINAL_ANSWER_MARK = "####"


def strip_calculator_annotations(text: str) -> str:
    return CALCULATOR_ANNOTATION.sub("", text)


def normalise_question(text: str) -> str:
    """Case- and whitespace-insensitive key, so a reformatted copy still matches."""
    return " ".join(text.lower().split())


def solution_text(answer: str, strip_annotations: bool) -> str:
    answer = answer.strip()
    return strip_calculator_annotations(answer) if strip_annotations else answer
