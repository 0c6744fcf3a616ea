"""The fixed few-shot pool: drawn once from the GSM8K train split, reused everywhere after.

The pool file keeps the original rows (annotations included), so its bytes depend only on the
train data, the pool size and the seed; stripping happens where the exemplars are used.
"""

from __future__ import annotations

import random
from pathlib import Path

from lib.errors import InputError
from lib.gsm8k import FINAL_ANSWER_MARK, normalise_question
from lib.io import atomic_write_jsonl, read_jsonl

RUN_POOL_FILE = "fewshot.jsonl"  # the copy inside a run folder: the pool that run used


def draw_pool(train: list[dict], size: int, seed: int) -> list[dict]:
    """`size` rows chosen with their own seed; random.Random gives the same draw on every machine."""
    if len(train) < size:
        raise InputError(f"few-shot pool needs {size} training examples, the train data has {len(train)}")
    indices = random.Random(seed).sample(range(len(train)), size)
    return [{"id": train[i]["id"], "question": train[i]["question"], "answer": train[i]["answer"]} for i in indices]


def read_pool(path: str | Path, size: int) -> list[dict]:
    if not Path(path).is_file():
        raise InputError(f"{path}: few-shot pool not found (run `make prep_fewshot` first)")
    rows = read_jsonl(path, required=("question", "answer"), what="the few-shot pool")
    if len(rows) != size:
        raise InputError(f"{path}: has {len(rows)} examples, expected {size} (delete it to draw the pool again)")
    for row in rows:
        if FINAL_ANSWER_MARK not in row["answer"]:
            raise InputError(f"{path}:{row['_line']}: answer has no '{FINAL_ANSWER_MARK} N' final answer")
    return [{k: v for k, v in row.items() if k != "_line"} for row in rows]


def ensure_pool(path: str | Path, load_train, size: int, seed: int) -> tuple[list[dict], bool]:
    """The pool at `path`, drawn from `load_train()` and written if absent; (pool, created)."""
    if Path(path).exists():
        return read_pool(path, size), False
    pool = draw_pool(load_train(), size, seed)
    atomic_write_jsonl(path, pool)
    return pool, True


def first_k(pool: list[dict], k: int) -> list[dict]:
    if k > len(pool):
        raise InputError(f"few-shot k={k} but the pool has only {len(pool)} examples")
    return pool[:k]


def remove_pool(train: list[dict], pool: list[dict]) -> tuple[list[dict], int]:
    """Train rows whose normalised question is not in the pool, and how many were removed."""
    pool_questions = {normalise_question(row["question"]) for row in pool}
    kept = [row for row in train if normalise_question(row["question"]) not in pool_questions]
    return kept, len(train) - len(kept)
