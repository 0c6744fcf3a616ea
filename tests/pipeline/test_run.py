"""A run's identity: a run no stage has worked for takes new settings; one with outputs asks for RECONFIGURE."""

import pytest

from lib.errors import InputError
from lib.pipeline.run import resolve_run, write_run_config
from tests.helpers import PRESET_DIR

DEMO = str(PRESET_DIR / "demo.yaml")


def _record(artifacts, *overrides, reconfigure=False):
    run, config, identity = resolve_run("r", DEMO, overrides, None, artifacts, reconfigure)
    return write_run_config(config, run, artifacts, identity, reconfigure).folder, config


def test_a_run_whose_stages_produced_nothing_takes_new_settings_without_reconfigure(tmp_path):
    _record(tmp_path, "data.gsm8k_train=hub")  # e.g. a first call that failed offline before any output
    folder, config = _record(tmp_path, "data.gsm8k_train=local/train.jsonl")
    assert config.data.gsm8k_train == "local/train.jsonl"
    _, again = _record(tmp_path)  # the run now remembers the new value
    assert again.data.gsm8k_train == "local/train.jsonl"

    (folder / "fewshot.jsonl").write_text("{}\n")  # a stage's output: from now on a change needs RECONFIGURE
    with pytest.raises(InputError, match="data.gsm8k_train: 'local/train.jsonl' -> 'other.jsonl'"):
        _record(tmp_path, "data.gsm8k_train=other.jsonl")


def test_an_evaluation_file_at_the_root_counts_as_work_done(tmp_path):
    _record(tmp_path)
    (tmp_path / "gsm8k_preds_r.jsonl").write_text("{}\n")
    with pytest.raises(InputError, match="was made with other settings"):
        _record(tmp_path, "eval.max_new_tokens=7")


def test_the_distributed_timeout_changes_without_reconfigure_and_reruns_nothing(tmp_path):
    folder, _ = _record(tmp_path)
    (folder / "fewshot.jsonl").write_text("{}\n")
    params = {p.name: p.read_bytes() for p in (folder / "params").iterdir()}
    _, config = _record(tmp_path, "hardware.distributed_timeout_minutes=720")
    assert config.hardware.distributed_timeout_minutes == 720
    assert {p.name: p.read_bytes() for p in (folder / "params").iterdir()} == params


def test_an_error_names_the_override_the_run_remembers_from_an_earlier_call(tmp_path):
    from lib.pipeline.run import with_remembered_overrides

    _record(tmp_path, "data.gsm8k_train=data/nope.jsonl", "train.epochs=2")  # a first call that then failed
    message = with_remembered_overrides("data/nope.jsonl: file not found", "r", [], tmp_path)
    assert message == ("data/nope.jsonl: file not found (run 'r' remembers SET=data.gsm8k_train=data/nope.jsonl"
                       f" from an earlier call, in {tmp_path / 'run_r' / 'run.json'}: give that key another value"
                       " with SET=...)")
    # Not when this call gives the key itself, nor for an error that has nothing to do with it.
    assert with_remembered_overrides("x: file not found", "r", ["data.gsm8k_train=x"], tmp_path) == "x: file not found"
    assert with_remembered_overrides("other.csv: no rows", "r", [], tmp_path) == "other.csv: no rows"
    assert with_remembered_overrides("no run yet", None, [], tmp_path) == "no run yet"
