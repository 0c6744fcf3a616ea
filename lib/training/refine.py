"""Rejection-sampling fine-tuning data (RFT; Yuan et al. 2023, "Scaling Relationship on Learning
Mathematical Reasoning with Large Language Models").

Each training question gets `samples_per_question` sampled solutions. A sample is kept when it ended
properly (not cut at max_new_tokens), its strict `#### N` answer equals the gold answer, and its
reasoning path is new for that question. A path is the sample's sequence of equations: every
`<arithmetic> = <number>` in order, with spaces, `$` and thousands commas removed and `x`/`×`/`÷`
written as `*`/`/`. A solution without any equation has the path ("no equations", its answer), so
at most one of those is kept. GSM8K's own solution (annotations stripped per the preset), when
kept, comes first and its path counts too: a sample that repeats its equations is a duplicate.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from collections import Counter
from pathlib import Path

from lib.errors import InputError
from lib.io import atomic_write_json, atomic_write_jsonl, file_sha256
from lib.pipeline.artifacts import RunPaths, refine_record_path, supersede
from lib.pipeline.fingerprints import record_for
from lib.tasks.gsm8k import INVALID, STRICT_PATTERN, normalise_question, solution_text, strict_answer

REJECTIONS = ("cut_off", "no_final_answer", "wrong_answer", "duplicate", "over_max_per_question")

_OPERAND = r"\(?\s*\$?\s*-?[0-9][0-9,]*(?:\.[0-9]+)?\s*%?\s*\)?"
EQUATION = re.compile(rf"({_OPERAND}(?:\s*[-+*/×x÷]\s*{_OPERAND})+)\s*=\s*\$?\s*(-?[0-9][0-9,]*(?:\.[0-9]+)?)")


def sample_seed(seed: int, question_id: str, sample: int) -> int:
    """The seed of one sample's generator: fixed by the run's seed, the question and the sample number,
    so a resumed, re-chunked or data-parallel run draws the same tokens."""
    digest = hashlib.sha256(f"{seed}:{question_id}:{sample}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1  # 63 bits: any torch.Generator accepts it


def equation_path(text: str) -> tuple[str, ...]:
    """The sequence of equations in a solution (see the module docstring), the dedupe key."""
    equations = []
    for left, right in EQUATION.findall(text):
        expression = re.sub(r"[\s$,]", "", left).replace("×", "*").replace("x", "*").replace("÷", "/")
        equations.append(f"{expression}={right.replace(',', '')}")
    return tuple(equations) if equations else ("no equations", strict_answer(text))


def answer_through_final_line(text: str) -> str:
    """The solution up to its last `#### N` (anything the model wrote after it dropped)."""
    last = list(STRICT_PATTERN.finditer(text))[-1]
    return text[: last.end()].strip()


def select_solutions(problem: dict, samples: list[dict], max_per_question: int, keep_original: bool,
                     strip_annotations: bool) -> tuple[list[dict], Counter, bool]:
    """(rows to write, rejection counts, whether any sample was correct) for one question.

    `samples` are engine outputs ({text, stop_reason, ...}) in sample order."""
    gold = strict_answer(problem["answer"])
    rows, seen, rejected, any_correct = [], set(), Counter(), False
    if keep_original:
        original = solution_text(problem["answer"], strip_annotations)
        rows.append({"id": problem["id"], "question": problem["question"], "answer": original, "source": "gsm8k"})
        seen.add(equation_path(original))
    kept = 0
    for sample in samples:
        text = sample["text"]
        parsed = strict_answer(text)
        if sample["stop_reason"] == "max_new_tokens":
            reason = "cut_off"
        elif parsed == INVALID:
            reason = "no_final_answer"
        elif parsed != gold:
            reason = "wrong_answer"
        else:
            any_correct = True
            path = equation_path(text)
            reason = "duplicate" if path in seen else "over_max_per_question" if kept >= max_per_question else None
            if reason is None:
                seen.add(path)
                kept += 1
                rows.append({"id": problem["id"], "question": problem["question"],
                             "answer": answer_through_final_line(text), "source": "sample"})
        if reason:
            rejected[reason] += 1
    return rows, rejected, any_correct


def check_no_leakage(rows: list[dict], test_questions: list[str], pool_questions: list[str], output: str) -> None:
    """A test or few-shot pool question in the training file would inflate the evaluation: an error."""
    forbidden = {normalise_question(q): "a GSM8K test question" for q in test_questions}
    forbidden |= {normalise_question(q): "a few-shot pool question" for q in pool_questions}
    for row in rows:
        where = forbidden.get(normalise_question(row["question"]))
        if where:
            raise InputError(f"{output}: question {row['id']!r} is {where}; the training data must not contain it"
                             " (check data.gsm8k_train)")


def select_all(problems: list[dict], outputs: list[dict], samples: int, max_per_question: int,
               keep_original: bool, strip_annotations: bool) -> tuple[list[dict], dict]:
    """(rows, yield metrics) for all questions; `outputs` holds each question's samples in turn."""
    rows, kept_per_question, correct, rejected = [], [], 0, Counter()
    for number, problem in enumerate(problems):
        chosen, reasons, any_correct = select_solutions(problem, outputs[number * samples:(number + 1) * samples],
                                                        max_per_question, keep_original, strip_annotations)
        rows += chosen
        kept_per_question.append(sum(row["source"] == "sample" for row in chosen))
        correct += any_correct
        rejected += reasons
    histogram = Counter(kept_per_question)
    return rows, {
        "questions": len(problems), "samples_per_question": samples, "samples": len(problems) * samples,
        "questions_with_a_correct_sample": correct,
        "kept_samples": sum(kept_per_question),
        "kept_per_question_mean": round(sum(kept_per_question) / max(len(problems), 1), 4),
        "kept_per_question_histogram": {str(k): histogram[k] for k in range(max(histogram, default=0) + 1)},
        "rejected": {reason: rejected[reason] for reason in REJECTIONS},
        "rows_written": len(rows), "gsm8k_solutions_kept": sum(row["source"] == "gsm8k" for row in rows),
        "dedupe_key": "the sequence of equations (lib/training/refine.py)",
    }


def generation_metrics(generated_tokens: int, seconds: float) -> dict:
    return {"generated_tokens": generated_tokens, "seconds": round(seconds, 2),
            "tokens_per_s": round(generated_tokens / seconds, 1) if seconds else None}


def summary_line(metrics: dict, output: str) -> str:
    rejected = ", ".join(f"{reason} {count}" for reason, count in metrics["rejected"].items())
    return (f"refine: {metrics['questions']} questions x {metrics['samples_per_question']} samples;"
            f" {metrics['questions_with_a_correct_sample']} with a correct sample, {metrics['kept_samples']} kept"
            f" ({metrics['kept_per_question_mean']:.2f} per question); rejected: {rejected};"
            f" {metrics['generated_tokens']} tokens at {metrics['tokens_per_s']} tokens/s; {metrics['rows_written']}"
            f" rows -> {output}")


def sampling_fingerprint(settings: dict, *input_files: Path) -> str:
    """What the refined file is made from: the settings that change its content (runtime keys left
    out, as for every stage: batch and chunk sizes change nothing, every sample has its own seed) and
    the input files' bytes."""
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for path in input_files:
        digest.update(file_sha256(path).encode() if path.is_file() else str(path).encode())
    return digest.hexdigest()


def output_state(output: Path, fingerprint: str) -> str:
    """absent; provided (no refine record beside it: the user's file, used as is, never overwritten);
    current (made by refine from these inputs); stale (made by refine from other inputs)."""
    record = refine_record_path(output)
    if not output.is_file():
        return "absent"
    if not record.is_file():
        return "provided"
    # Not touched when current: tokenize would then redo its work for nothing.
    return "current" if record_for(record, fingerprint) is not None else "stale"


def write_refined(output: Path, rows: list[dict], metrics: dict, run: RunPaths, fingerprint: str) -> None:
    """An earlier refined file (of other inputs) moves to the run's superseded/ folder; then the
    metrics, the file, and last the record that marks it as refine's (and current); then the
    run's partial refine work goes."""
    record = refine_record_path(output)
    supersede(run, [output, record], f"{output.name}: refined from other inputs")
    atomic_write_json(run.refine_metrics, metrics)
    atomic_write_jsonl(output, rows)
    atomic_write_json(record, {"fingerprint": fingerprint, "metrics": str(run.refine_metrics)})
    shutil.rmtree(run.partial("refine"), ignore_errors=True)
