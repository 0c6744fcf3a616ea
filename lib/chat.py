"""Chat rendering with assistant-only labels.

The model's own chat template renders the conversation; labels keep the ids of the assistant
content and the end-of-turn token after it (e.g. `<|im_end|>`), and are -100 everywhere else.
No `{% generation %}` markers are needed (Qwen3 and SmolLM2 templates have none): each
assistant turn is located in the rendered text after the generation prompt of the turns before
it, so text a template inserts into a rendered assistant turn but not into the generation
prompt (Qwen3's empty `<think>\n\n</think>\n\n`) stays unlearned.

The text is tokenized segment by segment (prompt | content + end-of-turn | rest): the prompt
segment is exactly what the model sees at inference, and no token straddles a label boundary.
"""

from __future__ import annotations

from dataclasses import dataclass

from lib.errors import InputError

IGNORE_INDEX = -100  # the label value the loss skips


@dataclass
class TokenizedExample:
    input_ids: list[int]
    labels: list[int]
    truncated: bool


def training_messages(question: str, answer: str, system_prompt: str | None = None) -> list[dict]:
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return messages + [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]


def tokenize_with_labels(tokenizer, messages: list[dict], max_seq_len: int | None = None) -> TokenizedExample:
    input_ids: list[int] = []
    labels: list[int] = []
    for text, trainable in label_segments(tokenizer, messages):
        ids = tokenizer(text, add_special_tokens=False)["input_ids"] if text else []
        input_ids += ids
        labels += ids if trainable else [IGNORE_INDEX] * len(ids)
    truncated = max_seq_len is not None and len(input_ids) > max_seq_len
    if truncated:
        input_ids, labels = input_ids[:max_seq_len], labels[:max_seq_len]
    return TokenizedExample(input_ids, labels, truncated)


def label_segments(tokenizer, messages: list[dict]) -> list[tuple[str, bool]]:
    """The rendered conversation as (text, trainable) pieces that concatenate to the full text."""
    full = tokenizer.apply_chat_template(messages, tokenize=False)
    segments: list[tuple[str, bool]] = []
    cursor = 0
    for turn, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prompt = tokenizer.apply_chat_template(messages[:turn], tokenize=False, add_generation_prompt=True)
        if not full.startswith(prompt) or len(prompt) < cursor:
            raise InputError(
                f"chat template: turn {turn} renders differently as a prompt than inside the conversation;"
                " assistant-only labels cannot be placed"
            )
        start = full.find(message["content"], len(prompt))
        if start < 0:
            raise InputError(f"chat template: assistant turn {turn} does not appear verbatim in the rendered text")
        end = start + len(message["content"])
        end_of_turn = _end_of_turn(tokenizer, full[end:])
        segments += [(full[cursor:start], False), (full[start:end] + end_of_turn, True)]
        cursor = end + len(end_of_turn)
    segments.append((full[cursor:], False))
    return [(text, trainable) for text, trainable in segments if text]


def _end_of_turn(tokenizer, rest: str) -> str:
    """The special token the template writes right after assistant content (longest match)."""
    specials = sorted(set(tokenizer.all_special_tokens) | _added_special_tokens(tokenizer), key=len, reverse=True)
    for token in specials:
        if token and rest.startswith(token):
            return token
    raise InputError("chat template: no end-of-turn special token follows the assistant content")


def _added_special_tokens(tokenizer) -> set[str]:
    return {token.content for token in tokenizer.added_tokens_decoder.values() if token.special}
