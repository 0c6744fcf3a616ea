"""GSM8K text conventions: calculator annotations, the `#### N` final answer, question matching."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

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


# Answer extraction, after lm-evaluation-harness's gsm8k task (strict-match on `#### N`,
# flexible-extract on the last number) and OpenAI's grade-school-math reference
# (`#### (\-?[0-9\.\,]+)`, with an explicit invalid value instead of None). Both compare
# numerically, so "$29.00" matches 29. Bump EXTRACTION_VERSION when these change.
EXTRACTION_VERSION = 1
INVALID = "[invalid]"
_NUMBER = r"-?\s*\$?\s*-?[0-9][0-9,]*(?:\.[0-9]+)?|-?\.[0-9]+"
STRICT_PATTERN = re.compile(r"####\s*(" + _NUMBER + r")")
BOXED_PATTERN = re.compile(r"\\boxed\{\s*\\?\$?\s*(" + _NUMBER + r")")
NUMBER_PATTERN = re.compile(_NUMBER)


def canonical_number(text: str) -> str:
    """'$1,234.50' -> '1234.5', '18.' -> '18', '-3' -> '-3'; INVALID if it is not a number."""
    cleaned = text.replace(",", "").replace("$", "").replace(" ", "").rstrip(".")
    negative = cleaned.count("-") % 2 == 1
    cleaned = cleaned.replace("-", "")
    try:
        value = Decimal(cleaned)
    except InvalidOperation:
        return INVALID
    value = -value if negative else value
    normal = value.normalize()
    return format(normal, "f") if normal != 0 else "0"


def strict_answer(text: str) -> str:
    """The number after the last `####`, canonical; INVALID when there is none."""
    matches = STRICT_PATTERN.findall(text)
    return canonical_number(matches[-1]) if matches else INVALID


def flexible_answer(text: str) -> str:
    """The last `\\boxed{N}` if any, else the last number in the text; INVALID when none."""
    boxed = BOXED_PATTERN.findall(text)
    if boxed:
        return canonical_number(boxed[-1])
    numbers = NUMBER_PATTERN.findall(text)
    return canonical_number(numbers[-1]) if numbers else INVALID


def is_correct(predicted: str, gold: str) -> bool:
    return predicted != INVALID and predicted == gold


def score_outputs(problems: list[dict], outputs: list[dict]) -> tuple[list[dict], dict]:
    """Per-question rows and the counts behind both metrics (strict `####` and flexible)."""
    rows = []
    for problem, output in zip(problems, outputs):
        gold = strict_answer(problem["answer"])
        parsed, flexible = strict_answer(output["text"]), flexible_answer(output["text"])
        rows.append({
            "id": problem["id"], "question": problem["question"], "gold": gold, "output": output["text"],
            "parsed": parsed, "correct": is_correct(parsed, gold),
            "flexible_parsed": flexible, "flexible_correct": is_correct(flexible, gold),
            "generated_tokens": len(output["token_ids"]), "stop_reason": output["stop_reason"],
        })
    counts = {
        "questions": len(rows),
        "correct": sum(r["correct"] for r in rows),
        "flexible_correct": sum(r["flexible_correct"] for r in rows),
        "invalid": sum(r["parsed"] == INVALID for r in rows),
        "hit_max_new_tokens": sum(r["stop_reason"] == "max_new_tokens" for r in rows),
    }
    return rows, counts


EVAL_SPEC = {
    "version": EXTRACTION_VERSION,
    "fewshot_format": "k earlier user/assistant chat turns (question / solution ending in '#### N'), then the question",
    "strict_match": STRICT_PATTERN.pattern + " (last match)",
    "flexible_extract": BOXED_PATTERN.pattern + " (last match), else the last " + NUMBER_PATTERN.pattern,
    "comparison": "numeric after removing ',', '$', spaces and a trailing '.'; no match = " + INVALID,
    "decoding": "greedy",
}
