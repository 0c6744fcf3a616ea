"""Assistant-only labels: decoding the kept labels gives exactly the assistant text + end-of-turn."""

import copy

import pytest

from lib.chat import IGNORE_INDEX, tokenize_with_labels, training_messages
from lib.errors import InputError

END_OF_TURN = "<|im_end|>"
TEMPLATE_FILES = ["qwen3_instruct_2507.jinja", "qwen3.jinja"]


@pytest.fixture(params=["smollm2"] + TEMPLATE_FILES)
def tokenizer(request, smollm2_tokenizer, target_template):
    """SmolLM2's own tokenizer, and the same tokenizer with each Qwen3 template set on it."""
    if request.param == "smollm2":
        return smollm2_tokenizer
    tok = copy.deepcopy(smollm2_tokenizer)
    tok.chat_template = target_template(request.param)
    return tok


def kept_text(tokenizer, example) -> str:
    return tokenizer.decode([i for i, label in zip(example.input_ids, example.labels) if label != IGNORE_INDEX])


CONVERSATIONS = {
    "single turn": training_messages("What is 3 + 4?", "3 + 4 = 7.\n#### 7"),
    "single turn with system": training_messages("What is 3 + 4?", "3 + 4 = 7.\n#### 7", "Answer briefly."),
    "multi turn": [
        {"role": "user", "content": "What is 2 + 2?"},
        {"role": "assistant", "content": "2 + 2 = 4.\n#### 4"},
        {"role": "user", "content": "And times 3?"},
        {"role": "assistant", "content": "4 * 3 = 12.\n#### 12"},
    ],
    "multi turn with system": [
        {"role": "system", "content": "You are a tutor."},
        {"role": "user", "content": "What is 2 + 2?"},
        {"role": "assistant", "content": "2 + 2 = 4.\n#### 4"},
        {"role": "user", "content": "And times 3?"},
        {"role": "assistant", "content": "4 * 3 = 12.\n#### 12"},
    ],
}


@pytest.mark.parametrize("name", CONVERSATIONS)
def test_kept_labels_decode_to_exactly_the_assistant_turns(tokenizer, name):
    messages = CONVERSATIONS[name]
    example = tokenize_with_labels(tokenizer, messages)
    expected = "".join(m["content"] + END_OF_TURN for m in messages if m["role"] == "assistant")
    assert kept_text(tokenizer, example) == expected
    assert len(example.input_ids) == len(example.labels) and not example.truncated


@pytest.mark.parametrize("name", CONVERSATIONS)
def test_input_ids_are_the_whole_rendered_conversation(tokenizer, name):
    messages = CONVERSATIONS[name]
    example = tokenize_with_labels(tokenizer, messages)
    assert tokenizer.decode(example.input_ids) == tokenizer.apply_chat_template(messages, tokenize=False)


def test_think_block_inserted_by_the_hybrid_template_is_not_learned(smollm2_tokenizer, target_template):
    tok = copy.deepcopy(smollm2_tokenizer)
    tok.chat_template = target_template("qwen3.jinja")
    messages = CONVERSATIONS["single turn"]
    assert "<think>" in tok.apply_chat_template(messages, tokenize=False)
    assert "<think>" not in tok.apply_chat_template(messages[:1], tokenize=False, add_generation_prompt=True)
    example = tokenize_with_labels(tok, messages)
    assert "think" not in kept_text(tok, example)
    masked = tok.decode([i for i, label in zip(example.input_ids, example.labels) if label == IGNORE_INDEX])
    assert "<think>\n\n</think>\n\n" in masked


def test_end_of_turn_keeps_its_label_although_it_is_also_the_pad_token(smollm2_tokenizer):
    # SmolLM2's pad token is <|im_end|>: the label must hold its id, not -100.
    assert smollm2_tokenizer.pad_token == END_OF_TURN
    example = tokenize_with_labels(smollm2_tokenizer, CONVERSATIONS["single turn"])
    eot_id = smollm2_tokenizer.convert_tokens_to_ids(END_OF_TURN)
    labelled = [label for label in example.labels if label != IGNORE_INDEX]
    assert labelled[-1] == eot_id


def test_truncation_at_max_seq_len_is_reported(smollm2_tokenizer):
    full = tokenize_with_labels(smollm2_tokenizer, CONVERSATIONS["single turn"])
    cut = tokenize_with_labels(smollm2_tokenizer, CONVERSATIONS["single turn"], max_seq_len=len(full.input_ids) - 3)
    assert cut.truncated and cut.input_ids == full.input_ids[:-3] and cut.labels == full.labels[:-3]


def test_a_template_that_rewrites_the_assistant_text_is_refused(smollm2_tokenizer):
    tok = copy.deepcopy(smollm2_tokenizer)
    tok.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content | upper }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    with pytest.raises(InputError, match="does not appear verbatim"):
        tokenize_with_labels(tok, training_messages("What is 3 + 4?", "Seven.\n#### 7"))
