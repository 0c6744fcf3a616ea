"""The device policy: a large model never starts on the CPU unasked; the embedded and small models do."""

import json
import os

import pytest
import torch
from click.testing import CliRunner

from lib.devices import check_device, select_device, use_device
from lib.errors import InputError
from tests.helpers import PRESET_DIR, free_port

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the behaviour without CUDA")


@no_cuda
def test_a_hub_model_without_cuda_stops_naming_what_torch_reports_and_how_to_force_the_cpu():
    with pytest.raises(InputError) as error:
        check_device("auto", "Qwen/Qwen3-4B-Instruct-2507", "train")
    message = str(error.value)
    assert message.startswith("train: no usable CUDA device for Qwen/Qwen3-4B-Instruct-2507")
    assert "torch.cuda.is_available() is False" in message and f"torch {torch.__version__}" in message
    assert 'SET="hardware.device=cpu"' in message and "\n" not in message


@no_cuda
def test_the_embedded_and_small_local_models_run_on_the_cpu_and_a_large_local_one_does_not(tmp_path, tiny_model_dir):
    check_device("auto", "embedded:smollm2-135m-instruct", "infer_gsm8k")
    check_device("auto", str(tiny_model_dir), "infer_gsm8k")
    large = tmp_path / "qwen3-4b-shaped"
    large.mkdir()
    (large / "config.json").write_text(json.dumps({"hidden_size": 2560, "num_hidden_layers": 36,
                                                   "vocab_size": 151936}))  # Qwen3-4B's shape: ~3.2B by the estimate
    with pytest.raises(InputError, match="too large to run on the CPU unasked"):
        check_device("auto", str(large), "score_safety")
    with pytest.raises(InputError, match="hardware.device is cuda"):
        check_device("cuda", "embedded:smollm2-135m-instruct", "train")


def test_device_cpu_hides_cuda_from_the_process_and_checking_the_policy_changes_nothing(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    check_device("cpu", "Qwen/Qwen3-4B-Instruct-2507", "train")
    assert "CUDA_VISIBLE_DEVICES" not in os.environ  # a check is a query
    select_device("cpu")
    assert os.environ["CUDA_VISIBLE_DEVICES"] == ""


@no_cuda
def test_a_qwen_preset_stage_stops_before_any_work(tmp_path):
    from stages import infer_ailuminate

    result = CliRunner().invoke(infer_ailuminate.main, ["--preset", str(PRESET_DIR / "simple.yaml"), "--run", "s",
                                                        "--artifacts", str(tmp_path / "artifacts")])
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1
    assert "infer_ailuminate: no usable CUDA device for Qwen/Qwen3-4B-Instruct-2507" in result.output
    assert not list((tmp_path / "artifacts").glob("ailuminate_*"))


def test_device_cpu_gives_the_process_a_cpu_state_and_fp32_evaluation():
    from lib.devices import process_state, resolve_eval_dtype

    state = use_device("cpu", "embedded:smollm2-135m-instruct", "infer_gsm8k")
    assert state.device.type == "cpu" == process_state().device.type  # also where CUDA was initialised before
    assert resolve_eval_dtype("auto") == torch.float32


def test_the_distributed_timeout_reaches_the_process_group(monkeypatch):
    """Rank 0 of a 2-process launch as its environment says; the process group it asks for is
    recorded, then made for this one process (nothing else joins it)."""
    import datetime as dt

    from accelerate import PartialState

    made, init, port = {}, torch.distributed.init_process_group, free_port()

    def record_and_make_alone(backend, **kwargs):
        made.update(kwargs)
        init(backend, init_method=f"tcp://127.0.0.1:{port}", world_size=1, rank=0, timeout=kwargs["timeout"])

    monkeypatch.setattr(torch.distributed, "init_process_group", record_and_make_alone)
    for name, value in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2",
                        "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}.items():
        monkeypatch.setenv(name, value)
    PartialState._reset_state()
    try:
        use_device("cpu", "embedded:smollm2-135m-instruct", "infer_gsm8k", timeout_minutes=123)
    finally:
        PartialState._reset_state()
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    assert made["timeout"] == dt.timedelta(minutes=123)


def test_the_trainer_waits_as_long_as_the_process_group(tmp_path):
    from lib.pipeline.config import TrainConfig
    from lib.training.trainer import training_arguments

    args = training_arguments(tmp_path, TrainConfig(), torch.float32, on_gpu=False, timeout_minutes=123)
    assert args.ddp_timeout == 123 * 60
