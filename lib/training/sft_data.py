"""Turning GSM8K problems into tokenized supervised examples with assistant-only labels."""

from __future__ import annotations

from lib.chat import IGNORE_INDEX, tokenize_with_labels, training_messages
from lib.tasks.gsm8k import solution_text


def tokenize_problems(tokenizer, problems: list[dict], max_seq_len: int, system_prompt: str | None,
                      strip_annotations: bool) -> tuple[list[dict], dict]:
    """Rows {id, input_ids, labels} and statistics (lengths, truncated, dropped)."""
    rows, lengths, truncated, dropped = [], [], 0, 0
    for problem in problems:
        answer = solution_text(problem["answer"], strip_annotations)
        messages = training_messages(problem["question"], answer, system_prompt)
        example = tokenize_with_labels(tokenizer, messages, max_seq_len)
        truncated += example.truncated
        if all(label == IGNORE_INDEX for label in example.labels):
            dropped += 1  # truncation cut the whole answer: nothing left to learn from
            continue
        lengths.append(len(example.input_ids))
        rows.append({"id": problem["id"], "input_ids": example.input_ids, "labels": example.labels})
    stats = {
        "examples": len(rows),
        "truncated_at_max_seq_len": truncated,
        "dropped_without_labels": dropped,
        "max_seq_len": max_seq_len,
        "length_percentiles": percentiles(lengths, (50, 90, 99, 100)),
        "label_tokens": sum(sum(label != IGNORE_INDEX for label in row["labels"]) for row in rows),
        "total_tokens": sum(lengths),
    }
    return rows, stats


def percentiles(values: list[int], points: tuple[int, ...]) -> dict[str, int]:
    """Nearest-rank percentiles, e.g. {'p50': 212, 'p100': 480}."""
    if not values:
        return {f"p{p}": 0 for p in points}
    ordered = sorted(values)
    return {f"p{p}": ordered[max(0, -(-p * len(ordered) // 100) - 1)] for p in points}
