"""train.report_to: trackers checked before any work, TensorBoard as before, the run's name and
resolved config logged with it, and no key or token written anywhere."""

import importlib.util
import json

import pytest
import torch
from click.testing import CliRunner

from lib.errors import InputError
from lib.training.tracking import CONFIG_ENTRY, check_trackers
from stages import train

FAKE_KEY = "wandb-key-that-must-never-be-written-0123456789"
FAKE_TOKEN = "hf_token_that_must_never_be_written_0123456789"


def test_tensorboard_is_attached_by_us_and_other_trackers_go_to_the_trainer():
    assert check_trackers(["tensorboard"]) == []
    assert check_trackers([]) == []


def test_an_unknown_tracker_names_the_known_ones():
    with pytest.raises(InputError, match=r"unknown tracker 'wandbb' \(the Trainer's integrations: .*wandb"):
        check_trackers(["tensorboard", "wandbb"])


@pytest.mark.skipif(importlib.util.find_spec("wandb") is not None, reason="wandb is installed here")
def test_a_tracker_that_is_not_installed_stops_the_stage_before_training(train_run, tmp_path):
    run_dir = train_run.prepared("w")
    result = CliRunner().invoke(train.main, [*train_run.common, "--run", "w", "--set", "train.report_to=[wandb]"])
    assert result.exit_code == 1
    assert result.output.strip() == ("Error: train.report_to: wandb is not installed here (pip install wandb in .venv,"
                                     " or remove it from train.report_to)")
    assert not (run_dir / "checkpoints").exists() and not (run_dir / "adapter").exists()


def _text_summaries(folder) -> dict[str, str]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder), size_guidance={"tensors": 0})
    events.Reload()
    return {tag.split("/")[0]: events.Tensors(tag)[0].tensor_proto.string_val[0].decode()
            for tag in events.Tags()["tensors"] if tag.endswith("text_summary")}


def test_the_run_name_and_resolved_config_are_logged_and_no_key_is_written(train_run, tmp_path, monkeypatch, capfd):
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    run_dir = train_run.prepared("t", "--set", "train.epochs=1")
    result = train_run(train, "t", "--set", "train.epochs=1")

    texts = _text_summaries(run_dir / "tensorboard")
    assert json.loads(texts["args"])["run_name"] == "t"
    logged = json.loads(texts["model_config"])[CONFIG_ENTRY]
    recorded = json.loads((run_dir / "config_resolved.json").read_text())
    assert logged == {"run": "t", **recorded} and logged["config"]["train"]["epochs"] == 1
    # The adapter does not carry the base model's config (only PEFT's own files).
    assert not (run_dir / "adapter" / "config.json").exists()

    written = [path for path in (tmp_path / "artifacts").rglob("*") if path.is_file()]
    assert written and not [path for path in written if FAKE_KEY.encode() in path.read_bytes()
                            or FAKE_TOKEN.encode() in path.read_bytes()]
    captured = capfd.readouterr()
    assert FAKE_KEY not in result.output + captured.out + captured.err
    assert FAKE_TOKEN not in result.output + captured.out + captured.err


def test_tensorboard_is_attached_only_when_asked_for(tmp_path):
    from transformers.integrations import TensorBoardCallback

    from lib.pipeline.artifacts import RunPaths
    from lib.training.trainer import _callbacks, training_arguments

    def kinds(tensorboard):
        return {type(callback) for callback in _callbacks(RunPaths(tmp_path, "r"), None, None, tensorboard)}

    assert TensorBoardCallback in kinds(True) and TensorBoardCallback not in kinds(False)
    # The other trackers go to the Trainer by name; "none" when there are none.
    from lib.pipeline.config import TrainConfig

    args = training_arguments(tmp_path, TrainConfig(), torch.float32, on_gpu=False, trackers=(), run_name="r")
    assert args.report_to in ("none", [], ["none"]) and args.run_name == "r"
