import pytest

from lib.errors import InputError
from lib.pipeline.presets import load_config
from lib.tasks.fewshot import draw_pool, draw_record, ensure_pool, first_k, read_pool, remove_pool
from lib.tasks.gsm8k import strip_calculator_annotations
from tests.helpers import PRESET_DIR, make_problems, write_jsonl

RECORD = {"pool_size": 8, "seed": 42, "train_data": "openai/gsm8k", "hub_config": "main"}


def _train():
    return [{"id": f"train-{i}", **p} for i, p in enumerate(make_problems(30))]


def test_same_train_data_gives_the_same_pool_bytes(tmp_path):
    first, created = ensure_pool(tmp_path / "a.jsonl", _train, RECORD)
    second, _ = ensure_pool(tmp_path / "b.jsonl", _train, RECORD)
    assert created and len(first) == 8
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()
    assert first == second


def test_pool_depends_on_the_seed():
    assert draw_pool(_train(), 8, seed=42) != draw_pool(_train(), 8, seed=43)


def test_existing_pool_is_reused_not_redrawn(tmp_path):
    path = tmp_path / "pool.jsonl"
    ensure_pool(path, _train, RECORD)
    before = path.read_bytes()
    pool, created = ensure_pool(path, lambda: pytest.fail("train data must not be loaded"), dict(RECORD))
    assert not created and path.read_bytes() == before and len(pool) == 8


@pytest.mark.parametrize("change, message", [
    ({"seed": 7}, "drawn with fewshot.seed = 42, this run asks for 7"),
    ({"pool_size": 6}, "drawn with fewshot.pool_size = 8, this run asks for 6"),
    ({"train_data": "other.jsonl"}, "drawn with data.gsm8k_train = 'openai/gsm8k', this run asks for 'other.jsonl'"),
])
def test_a_pool_drawn_with_other_settings_is_refused(tmp_path, change, message):
    path = tmp_path / "pool.jsonl"
    ensure_pool(path, _train, RECORD)
    with pytest.raises(InputError, match=message):
        ensure_pool(path, lambda: pytest.fail("must not redraw"), {**RECORD, **change})


def test_a_pool_drawn_from_train_data_that_changed_is_refused(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", make_problems(12))
    ensure_pool(tmp_path / "pool.jsonl", _train, draw_record(8, 42, str(train), "main"))
    write_jsonl(train, make_problems(12, start=1))
    with pytest.raises(InputError, match=r"pool\.jsonl: drawn with the train data's content \(sha256\)"):
        ensure_pool(tmp_path / "pool.jsonl", _train, draw_record(8, 42, str(train), "main"))


def test_pool_with_the_wrong_count_is_refused(tmp_path):
    path = write_jsonl(tmp_path / "pool.jsonl", make_problems(5))
    with pytest.raises(InputError, match=r"pool\.jsonl: has 5 examples, expected 8"):
        read_pool(path, 8)


def test_fewshot_examples_are_removed_from_training_even_when_reformatted():
    train = _train()
    pool = draw_pool(train, 8, seed=42)
    reformatted = [{**row, "question": "  " + row["question"].upper().replace(" ", "  ")} for row in pool]
    kept, removed = remove_pool(train, reformatted)
    assert removed == 8 and len(kept) == 22
    assert not {r["question"] for r in kept} & {r["question"] for r in pool}


@pytest.mark.parametrize("preset, k", [("simple", 3), ("medium", 5), ("strong", 8)])
def test_each_preset_uses_the_first_k_pool_examples(preset, k):
    pool = draw_pool(_train(), 8, seed=42)
    chosen = first_k(pool, load_config(PRESET_DIR / f"{preset}.yaml").fewshot.k)
    assert chosen == pool[:k]


def test_calculator_annotations_are_stripped():
    text = "He has 3+6=<<3+6=9>>9 apples.\n#### 9"
    assert strip_calculator_annotations(text) == "He has 3+6=9 apples.\n#### 9"
