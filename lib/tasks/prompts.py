"""Evaluation prompts: the k few-shot exemplars as earlier chat turns, then the question.

The format is the training format (tokenize stage: optional system turn, user = question,
assistant = solution ending in `#### N`), so a fine-tuned model sees at evaluation what it
learned; every preset uses it, only k changes.
"""

from __future__ import annotations

from lib.chat import training_messages
from lib.tasks.gsm8k import solution_text


def gsm8k_messages(question: str, exemplars: list[dict], system_prompt: str | None,
                   strip_annotations: bool) -> list[dict]:
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    for example in exemplars:
        messages += training_messages(example["question"], solution_text(example["answer"], strip_annotations))
    return messages + [{"role": "user", "content": question}]
