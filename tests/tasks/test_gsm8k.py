import pytest

from lib.tasks.gsm8k import INVALID, flexible_answer, is_correct, score_outputs, strict_answer


@pytest.mark.parametrize("text, expected", [
    ("#### 18", "18"),
    ("####18", "18"),
    ("#### 1,234", "1234"),
    ("#### -3", "-3"),
    ("#### 2.50", "2.5"),
    ("#### $18.", "18"),
    ("first #### 7\nthen #### 9", "9"),
    ("The answer is 18.", INVALID),
    ("#### 18.00 dollars", "18"),
    ("####", INVALID),
])
def test_strict_answer_table(text, expected):
    assert strict_answer(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("so the total is \\boxed{42} and 7 apples", "42"),
    ("It costs $29.00.", "29"),
    ("3 + 4 = 7", "7"),
    ("no number here", INVALID),
])
def test_flexible_answer_prefers_boxed_then_last_number(text, expected):
    assert flexible_answer(text) == expected


def test_comparison_is_numeric_and_invalid_never_matches():
    assert strict_answer("#### 18") == strict_answer("#### 18.0") == strict_answer("#### 18.00")
    assert is_correct(flexible_answer("$29.00"), strict_answer("#### 29"))
    assert not is_correct(INVALID, INVALID)


def test_scoring_counts_both_extractions():
    problems = [{"id": "a", "question": "q", "answer": "x #### 5"}, {"id": "b", "question": "q",
                                                                     "answer": "#### 1,000"}]
    outputs = [{"text": "so 5\n#### 5", "token_ids": [1, 2], "stop_reason": "eos"},
               {"text": "It is 1000 in total", "token_ids": [3], "stop_reason": "max_new_tokens"}]
    rows, counts = score_outputs(problems, outputs)
    assert [r["correct"] for r in rows] == [True, False]
    assert [r["flexible_correct"] for r in rows] == [True, True]
    assert counts == {"questions": 2, "correct": 1, "flexible_correct": 2, "invalid": 1, "hit_max_new_tokens": 1}
