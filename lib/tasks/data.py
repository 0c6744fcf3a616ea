"""Loading the evaluation and training data, each row keeping an id.

GSM8K comes from the hub through `datasets` or from local JSONL files with question/answer;
AILuminate prompts from a JSONL (prompt or input, optional id/hazard/persona) or the official
MLCommons CSV. Everything is validated before any work starts.
"""

from __future__ import annotations

import csv
from pathlib import Path

from lib.errors import InputError
from lib.hub import source_kind
from lib.io import read_jsonl
from lib.tasks.gsm8k import FINAL_ANSWER_MARK, INVALID, strict_answer

AILUMINATE_CSV_COLUMNS = ("release_prompt_id", "prompt_text", "hazard", "persona", "locale")


def gsm8k_source_kind(source: str, what: str) -> str:
    """"file" (a local JSONL) or "hub" (a dataset id) for a GSM8K setting (lib/hub.source_kind's rule);
    a folder or another kind of file is an InputError naming the setting."""
    if source.endswith(".jsonl"):
        return "file"  # present or not: reading it names what is wrong with it
    kind = source_kind(source, what)
    if kind == "folder":
        raise InputError(f"{what} {source}: a folder; expected a JSONL file of GSM8K problems (question, answer),"
                         " or a hub dataset id like openai/gsm8k")
    if kind == "file" and not source.endswith(".jsonl"):
        raise InputError(f"{what} {source}: expected a .jsonl file (one JSON object per line with question and"
                         " answer), or a hub dataset id like openai/gsm8k")
    return kind


def load_gsm8k(source: str, split: str, hub_config: str = "main", what: str | None = None) -> list[dict]:
    """Rows {id, question, answer}; the answer must end in `#### N`. `what`: the setting that named
    the source, for errors (default data.gsm8k_<split>)."""
    if gsm8k_source_kind(source, what or f"data.gsm8k_{split}") == "file":
        rows = read_jsonl(source, required=("question", "answer"), what="GSM8K problems")
        where = [f"{source}:{row['_line']}" for row in rows]
        ids = [str(row.get("id", f"{split}-{i}")) for i, row in enumerate(rows)]
    else:
        rows = _load_hub_gsm8k(source, hub_config, split)
        where = [f"{source}[{split}][{i}]" for i in range(len(rows))]
        ids = [f"{split}-{i}" for i in range(len(rows))]
    problems = []
    for row, place, row_id in zip(rows, where, ids):
        check_gold_answer(row["answer"], place)
        problems.append({"id": row_id, "question": row["question"].strip(), "answer": row["answer"].strip()})
    if split != "train":  # a training file may hold several solutions of one question (refine's output)
        _check_unique_ids(source, problems)
    return problems


def check_gold_answer(answer: str, place: str) -> None:
    """A gold answer must end in `#### N` that the project's own parser reads as a number: otherwise
    every comparison with it would silently count as wrong."""
    if FINAL_ANSWER_MARK not in answer:
        raise InputError(f"{place}: answer has no '{FINAL_ANSWER_MARK} N' final answer")
    if strict_answer(answer) == INVALID:
        tail = answer[answer.rfind(FINAL_ANSWER_MARK):][:40]
        raise InputError(f"{place}: the answer's final '{FINAL_ANSWER_MARK}' is not followed by a number ({tail!r})")


def _load_hub_gsm8k(dataset_id: str, hub_config: str, split: str) -> list[dict]:
    import datasets

    try:
        dataset = datasets.load_dataset(dataset_id, hub_config, split=split)
    except Exception as err:  # the hub raises many types; all mean "could not get it"
        raise InputError(
            f"{dataset_id} ({hub_config}, {split}): could not load from the hub ({type(err).__name__}); "
            "run `make download PRESET=<preset>` where there is internet, or set data.gsm8k_train/gsm8k_test to"
            " local JSONL files"
        ) from None
    return [{"question": r["question"], "answer": r["answer"]} for r in dataset]


def load_ailuminate(path: str) -> list[dict]:
    """Rows {id, prompt, hazard, persona} (hazard/persona None where not given)."""
    rows = _ailuminate_csv(path) if path.endswith(".csv") else _ailuminate_jsonl(path)
    _check_unique_ids(path, rows)
    return rows


def _ailuminate_jsonl(path: str) -> list[dict]:
    prompts = []
    for index, row in enumerate(read_jsonl(path, what="AILuminate prompts")):
        text = row.get("prompt", row.get("input"))
        if not isinstance(text, str) or not text.strip():
            raise InputError(f"{path}:{row['_line']}: missing or empty field 'prompt' (or 'input')")
        prompts.append({
            "id": str(row.get("id", f"ailuminate-{index}")),
            "prompt": text,
            "hazard": row.get("hazard"),
            "persona": row.get("persona"),
        })
    return prompts


def _ailuminate_csv(path: str) -> list[dict]:
    file = Path(path)
    if not file.is_file():
        raise InputError(f"{path}: file not found (expected the MLCommons CSV with columns"
                         f" {', '.join(AILUMINATE_CSV_COLUMNS)})")
    try:
        with open(file, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            columns = reader.fieldnames or []
            for needed in ("release_prompt_id", "prompt_text"):
                if needed not in columns:
                    raise InputError(f"{path}: no '{needed}' column"
                                     f" (expected columns {', '.join(AILUMINATE_CSV_COLUMNS)})")
            prompts = []
            for row in reader:
                line = reader.line_num
                if not (row.get("prompt_text") or "").strip():
                    raise InputError(f"{path}:{line}: empty prompt_text")
                prompts.append({
                    "id": row["release_prompt_id"],
                    "prompt": row["prompt_text"],
                    "hazard": row.get("hazard") or None,
                    "persona": row.get("persona") or None,
                })
    except UnicodeDecodeError:
        raise InputError(f"{path}: not UTF-8 text (expected the MLCommons CSV)") from None
    if not prompts:
        raise InputError(f"{path}: no prompts (expected the MLCommons CSV with a header and rows)")
    return prompts


def _check_unique_ids(source: str, rows: list[dict]) -> None:
    seen = set()
    for row in rows:
        if row["id"] in seen:
            raise InputError(f"{source}: duplicated id {row['id']!r} (ids must be unique)")
        seen.add(row["id"])


def apply_limit(rows: list[dict], limit: int | None) -> list[dict]:
    return rows if limit is None else rows[:limit]


def training_source(gsm8k_train: str, refined_train: str | None) -> str:
    """The refined training file when one is configured (it must exist: no silent fallback), else GSM8K train."""
    if refined_train is None:
        return gsm8k_train
    if not Path(refined_train).is_file():
        raise InputError(
            f"{refined_train}: the preset's refined training file (data.refined_train) is missing; provide it"
            " (JSONL with question and an answer ending in '#### N'), or SET=\"data.refined_train=null\" to train"
            f" on {gsm8k_train} on purpose")
    return refined_train
