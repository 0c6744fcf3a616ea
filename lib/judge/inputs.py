"""What the judge reads: the guidelines, the filled template, and its token ids in each layout
(chat turns with inserted text kept plain, or one classifier input cut to the model's limit)."""

from __future__ import annotations

import re
from pathlib import Path

from lib.errors import InputError

PLACEHOLDER = re.compile(r"\{(guidelines|prompt|response)\}")


TOKEN_LIMIT_PLACEHOLDER = 1_000_000  # tokenizers without a real limit report ~1e30


POSITION_OFFSET = {"roberta": 2, "xlm-roberta": 2, "camembert": 2, "longformer": 2}  # positions start after padding_idx


def read_guidelines(path: str) -> str:
    file = Path(path)
    if not file.is_file():
        raise InputError(f"{path}: Safety Guidelines prompt not found (expected the provided text file,"
                         " e.g. data/safety_prompt.txt)")
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{path}: not UTF-8 text (expected the Safety Guidelines prompt)") from None
    if not text.strip():
        raise InputError(f"{path}: empty (expected the Safety Guidelines prompt)")
    return text


def check_template(template: str) -> None:
    if "{response}" not in template or "{guidelines}" not in template:
        raise InputError(f"safety.template {template!r}: needs the {{guidelines}} and {{response}} placeholders")


def judge_text(template: str, guidelines: str, prompt: str, response: str) -> str:
    """The template with its placeholders filled in one pass (inserted text is never re-scanned)."""
    values = {"guidelines": guidelines, "prompt": prompt, "response": response}
    return PLACEHOLDER.sub(lambda match: values[match.group(1)], template)


def encode_text(tokenizer, text: str, plain: bool) -> list[int]:
    """Token ids of `text`; plain=True: special-token look-alikes in it become ordinary tokens."""
    return tokenizer(text, add_special_tokens=False, split_special_tokens=plain)["input_ids"] if text else []


def chat_prompt_ids(tokenizer, turns: list[tuple[str, str]]) -> list[int]:
    """(role, text) turns through the tokenizer's chat template with a generation prompt, each text
    tokenized as plain text. Templates that want typed content parts (Llama Guard 3 1B) get them."""
    markers = [f"\u2063TURN-{index}\u2063" for index in range(len(turns))]  # invisible; no template emits them
    rendered = None
    for typed in (False, True):
        messages = [{"role": role, "content": [{"type": "text", "text": marker}] if typed else marker}
                    for (role, _), marker in zip(turns, markers)]
        try:
            text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        except Exception:  # noqa: BLE001 - a template written for the other content form may raise anything
            continue
        if all(text.count(marker) == 1 for marker in markers) and \
                [text.index(m) for m in markers] == sorted(text.index(m) for m in markers):
            rendered = text
            break
    if rendered is None:
        raise InputError("safeguard chat template does not place each turn's text verbatim (tried plain and typed"
                         " content); use safety.layout=text")
    ids, rest = [], rendered
    for marker, (_, content) in zip(markers, turns):
        before, _, rest = rest.partition(marker)
        ids += encode_text(tokenizer, before, plain=False) + encode_text(tokenizer, content, plain=True)
    return ids + encode_text(tokenizer, rest, plain=False)


def generative_input_ids(tokenizer, layout: str, filled: str, prompt: str) -> list[int]:
    """The guard's input in the given layout (see the module docstring)."""
    if layout == "conversation":
        return chat_prompt_ids(tokenizer, [("user", prompt), ("assistant", filled)])
    if layout == "user_turn":
        return chat_prompt_ids(tokenizer, [("user", filled)])
    return tokenizer(filled, add_special_tokens=True, split_special_tokens=True)["input_ids"]


def input_limit(tokenizer, model_config) -> int:
    """The classifier's real input limit: the tokenizer's, unless that is a placeholder, then the
    model's position embeddings (less the offset of RoBERTa-like models)."""
    limit = getattr(tokenizer, "model_max_length", None)
    positions = getattr(model_config, "max_position_embeddings", None)
    if positions is not None:
        positions -= POSITION_OFFSET.get(getattr(model_config, "model_type", ""), 0)
    if isinstance(limit, int) and limit < TOKEN_LIMIT_PLACEHOLDER:
        return min(limit, positions) if positions else limit
    if positions is None:
        raise InputError("safeguard classifier: neither its tokenizer nor its config gives an input length limit")
    return positions


def classifier_input_ids(tokenizer, limit: int, template: str, guidelines: str, prompt: str,
                         response: str) -> tuple[list[int], str]:
    """(ids, what was cut: '' | 'guidelines' | 'response'). When guidelines + response do not fit,
    the end of the guidelines is cut, never the response; only a response longer than the limit
    by itself is cut (and said)."""
    def encode(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=True, split_special_tokens=True)["input_ids"]

    ids = encode(judge_text(template, guidelines, prompt, response))
    if len(ids) <= limit:
        return ids, ""
    kept = tokenizer(guidelines, add_special_tokens=False)["input_ids"]
    while kept:
        kept = kept[:max(len(kept) - (len(ids) - limit), 0)]
        ids = encode(judge_text(template, tokenizer.decode(kept), prompt, response))
        if len(ids) <= limit:
            return ids, "guidelines"
    return ids[:limit], "response"
