import json

import pytest

from lib.errors import InputError
from lib.io import read_jsonl
from lib.tasks.data import load_ailuminate, load_gsm8k, training_source
from tests.helpers import make_problems, write_jsonl


def test_local_gsm8k_rows_keep_ids_and_fields(gsm8k_files):
    train, _ = gsm8k_files
    rows = load_gsm8k(str(train), "train")
    assert len(rows) == 20
    assert rows[0]["id"] == "train-0" and "#### 3" in rows[0]["answer"]
    assert set(rows[0]) == {"id", "question", "answer"}


def test_jsonl_ids_are_kept_when_given(tmp_path):
    path = write_jsonl(tmp_path / "t.jsonl", [{**p, "id": f"q{i}"} for i, p in enumerate(make_problems(2))])
    assert [r["id"] for r in load_gsm8k(str(path), "test")] == ["q0", "q1"]


def test_malformed_jsonl_line_names_file_and_line(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text(json.dumps(make_problems(1)[0]) + "\n\n{not json\n")
    with pytest.raises(InputError, match=r"train\.jsonl:3: not a valid JSON line"):
        load_gsm8k(str(path), "train")


def test_missing_field_names_line_and_field(tmp_path):
    path = write_jsonl(tmp_path / "train.jsonl", make_problems(1) + [{"question": "q"}])
    with pytest.raises(InputError, match=r"train\.jsonl:2: missing or empty field 'answer'"):
        load_gsm8k(str(path), "train")


def test_gold_answer_without_final_mark_is_refused(tmp_path):
    path = write_jsonl(tmp_path / "test.jsonl", [{"question": "q", "answer": "The answer is 4."}])
    with pytest.raises(InputError, match=r"test\.jsonl:1: answer has no '#### N'"):
        load_gsm8k(str(path), "test")


def test_missing_empty_and_non_utf8_files(tmp_path):
    with pytest.raises(InputError, match=r"absent\.jsonl: file not found \(expected JSONL"):
        load_gsm8k(str(tmp_path / "absent.jsonl"), "train")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(InputError, match=r"empty\.jsonl: file is empty"):
        load_gsm8k(str(tmp_path / "empty.jsonl"), "train")
    (tmp_path / "latin.jsonl").write_bytes(b'{"question": "caf\xe9", "answer": "#### 1"}\n')
    with pytest.raises(InputError, match=r"latin\.jsonl:1: not UTF-8"):
        load_gsm8k(str(tmp_path / "latin.jsonl"), "train")


def test_a_json_value_that_is_not_an_object_is_refused(tmp_path):
    (tmp_path / "list.jsonl").write_text("[1, 2]\n")
    with pytest.raises(InputError, match=r"list\.jsonl:1: not a JSON object"):
        read_jsonl(tmp_path / "list.jsonl")


def test_duplicated_ids_are_refused(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", [{"id": "x", "prompt": "p1"}, {"id": "x", "prompt": "p2"}])
    with pytest.raises(InputError, match="duplicated id 'x'"):
        load_ailuminate(str(path))


def test_ailuminate_jsonl_accepts_prompt_or_input_and_keeps_hazard(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", [
        {"prompt": "p1", "hazard": "ncr", "persona": "normal"},
        {"input": "p2"},
    ])
    rows = load_ailuminate(str(path))
    assert rows == [
        {"id": "ailuminate-0", "prompt": "p1", "hazard": "ncr", "persona": "normal"},
        {"id": "ailuminate-1", "prompt": "p2", "hazard": None, "persona": None},
    ]


def test_ailuminate_jsonl_without_prompt_names_the_line(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", [{"prompt": "ok"}, {"text": "wrong field"}])
    with pytest.raises(InputError, match=r"a\.jsonl:2: missing or empty field 'prompt'"):
        load_ailuminate(str(path))


def test_ailuminate_official_csv(tmp_path):
    path = tmp_path / "prompts.csv"
    path.write_text(
        "release_prompt_id,prompt_text,hazard,persona,locale,prompt_hash\n"
        'airr-1,"A prompt, with a comma",vcr,normal,en_US,h1\n'
        "airr-2,Another prompt,spc_fin,skilled,en_US,h2\n"
    )
    rows = load_ailuminate(str(path))
    assert rows[0] == {"id": "airr-1", "prompt": "A prompt, with a comma", "hazard": "vcr", "persona": "normal"}
    assert [r["id"] for r in rows] == ["airr-1", "airr-2"]


def test_csv_without_prompt_column_is_refused(tmp_path):
    path = tmp_path / "prompts.csv"
    path.write_text("release_prompt_id,text\nairr-1,hello\n")
    with pytest.raises(InputError, match=r"prompts\.csv: no 'prompt_text' column"):
        load_ailuminate(str(path))


def test_a_configured_refined_training_file_is_required(tmp_path, gsm8k_files):
    train, _ = gsm8k_files
    refined = tmp_path / "refined.jsonl"
    with pytest.raises(InputError, match=r"refined\.jsonl: the preset's refined training file \(data\.refined_train\)"
                                         r" is missing.*data\.refined_train=null"):
        training_source(str(train), str(refined))
    write_jsonl(refined, make_problems(3))
    assert training_source(str(train), str(refined)) == str(refined)
    assert training_source(str(train), None) == str(train)


def test_hub_source_failure_says_how_to_work_offline():
    # HF_DATASETS_OFFLINE is set by conftest: the hub path runs and fails cleanly.
    with pytest.raises(InputError, match="could not load from the hub.*local JSONL"):
        load_gsm8k("openai/gsm8k", "train")
