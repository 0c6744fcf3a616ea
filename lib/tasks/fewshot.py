"""The fixed few-shot pool: drawn once from the GSM8K train split, reused everywhere after.

The pool file keeps the original rows (annotations included), so its bytes depend only on the
train data, the pool size and the seed; stripping happens where the exemplars are used.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from lib.errors import InputError
from lib.io import atomic_write_json, atomic_write_jsonl, file_sha256, read_jsonl
from lib.tasks.data import check_gold_answer
from lib.tasks.gsm8k import normalise_question


def draw_pool(train: list[dict], size: int, seed: int) -> list[dict]:
    """`size` rows chosen with their own seed; random.Random gives the same draw on every machine."""
    if len(train) < size:
        raise InputError(f"few-shot pool needs {size} training examples, the train data has {len(train)}")
    indices = random.Random(seed).sample(range(len(train)), size)
    return [{"id": train[i]["id"], "question": train[i]["question"], "answer": train[i]["answer"]} for i in indices]


def read_pool(path: str | Path, size: int, run: str = "<run>") -> list[dict]:
    if not Path(path).is_file():
        raise InputError(f"{path}: few-shot pool not found (run `make prep_fewshot RUN={run}` first)")
    rows = read_jsonl(path, required=("question", "answer"), what="the few-shot pool")
    if len(rows) != size:
        raise InputError(f"{path}: has {len(rows)} examples, expected {size} (delete it to draw the pool again)")
    for row in rows:
        check_gold_answer(row["answer"], f"{path}:{row['_line']}")
    return [{k: v for k, v in row.items() if k != "_line"} for row in rows]


def draw_record_path(pool_path: str | Path) -> Path:
    """The pool's sidecar that records how it was drawn: fewshot_gsm8k_fixed.jsonl -> .draw.json."""
    return Path(pool_path).with_suffix(".draw.json")


def draw_record(size: int, seed: int, train_source: str, hub_config: str) -> dict:
    """What a pool's draw depends on: size, seed and the train data (a local file by its content)."""
    record = {"pool_size": size, "seed": seed, "train_data": train_source}
    if Path(train_source).is_file():
        record["train_sha256"] = file_sha256(train_source)
    else:
        record["hub_config"] = hub_config
    return record


def ensure_pool(path: str | Path, load_train, record: dict) -> tuple[list[dict], bool]:
    """The pool at `path` (checked against `record`, see draw_record), or drawn from `load_train()`
    and written with its record when absent; (pool, created)."""
    if Path(path).exists():
        check_draw(path, record)
        return read_pool(path, record["pool_size"]), False
    pool = draw_pool(load_train(), record["pool_size"], record["seed"])
    atomic_write_json(draw_record_path(path), record)
    atomic_write_jsonl(path, pool)  # last: the pool is there only with its record
    return pool, True


def check_draw(path: str | Path, wanted: dict) -> None:
    """A pool drawn with other settings or train data is an error naming the difference; a pool
    without a record (provided by hand) is used as given."""
    sidecar = draw_record_path(path)
    if not sidecar.is_file():
        print(f"prep_fewshot: {path} has no {sidecar.name}; using it as given (not checked against fewshot.seed,"
              " fewshot.pool_size or the train data)")
        return
    drawn = json.loads(sidecar.read_text(encoding="utf-8"))
    names = {"pool_size": "fewshot.pool_size", "seed": "fewshot.seed", "train_data": "data.gsm8k_train",
             "train_sha256": "the train data's content (sha256)", "hub_config": "data.gsm8k_hub_config"}
    for key, name in names.items():
        if drawn.get(key) != wanted.get(key):
            raise InputError(f"{path}: drawn with {name} = {drawn.get(key)!r}, this run asks for {wanted.get(key)!r};"
                             f" delete it and {sidecar.name} to draw again, or set fewshot.path to another file")


def first_k(pool: list[dict], k: int) -> list[dict]:
    if k > len(pool):
        raise InputError(f"few-shot k={k} but the pool has only {len(pool)} examples")
    return pool[:k]


def remove_pool(train: list[dict], pool: list[dict]) -> tuple[list[dict], int]:
    """Train rows whose normalised question is not in the pool, and how many were removed."""
    pool_questions = {normalise_question(row["question"]) for row in pool}
    kept = [row for row in train if normalise_question(row["question"]) not in pool_questions]
    return kept, len(train) - len(kept)
