"""The hub side of a preset offline: one line naming what is missing and the fix; `make download` checks."""

import os
import subprocess
import sys

import pytest

from lib.errors import InputError
from lib.hub import hub_errors, is_hub_id, why_not
from tests.helpers import PRESET_DIR, REPO, make_problems, write_jsonl


def _offline_env(tmp_path) -> dict:
    """No network and an empty HF cache: a compute node before `make download`."""
    env = {key: value for key, value in os.environ.items() if key not in ("MAKEFLAGS", "HF_TOKEN")}
    env.update(HF_HOME=str(tmp_path / "hf"), HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    return env


def test_hub_ids_are_told_from_local_paths(tmp_path):
    assert is_hub_id("Qwen/Qwen3-4B-Instruct-2507") and is_hub_id("openai/gsm8k")
    assert not is_hub_id("data/safeguard_model")  # a folder under data/, even before it is provided
    assert not is_hub_id("embedded:smollm2-135m-instruct") and not is_hub_id(str(tmp_path))


def test_the_reason_comes_from_the_hub_error_type_under_transformers_wrapping():
    import requests
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    def answer(status):  # the hub's HTTP answer the errors carry
        response = requests.Response()
        response.status_code = status
        return response

    for error, expected in ((GatedRepoError("gated", response=answer(403)), "set HF_TOKEN"),
                            (RepositoryNotFoundError("missing", response=answer(404)), "a typo")):
        try:
            try:
                raise error
            except Exception as inner:
                raise OSError("wrapped by transformers") from inner
        except OSError as outer:
            assert expected in why_not(outer)


def test_a_model_missing_from_the_cache_offline_is_one_line_naming_it_and_make_download(monkeypatch):
    from transformers import AutoTokenizer

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(InputError) as error:
        with hub_errors("example-org/not-a-cached-model", "model.base", "main"):
            AutoTokenizer.from_pretrained("example-org/not-a-cached-model", revision="main")
    message = str(error.value)
    assert message.startswith("model.base example-org/not-a-cached-model@main: ") and "\n" not in message
    assert "make download PRESET=<preset>" in message


def test_offline_smoke_with_local_gsm8k_stops_before_any_stage_naming_the_uncached_model(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", make_problems(20))
    test = write_jsonl(tmp_path / "test.jsonl", make_problems(5, start=100))
    done = subprocess.run(["make", "--no-print-directory", "smoke", "PRESET=simple", f"ARTIFACTS={tmp_path / 'a'}",
                           f"SET=data.gsm8k_train={train} data.gsm8k_test={test}"
                           f" fewshot.path={tmp_path / 'pool.jsonl'}"],
                          cwd=REPO, env=_offline_env(tmp_path), capture_output=True, text=True, timeout=600)
    output = done.stdout + done.stderr
    assert done.returncode != 0 and "Traceback" not in output and "-m stages.prep_fewshot" not in output
    # The preflight lists every problem at once (here also the AILuminate and safety files this clone lacks).
    errors = [line for line in output.splitlines() if line.startswith("Error:")]
    assert ("Error: model.base Qwen/Qwen3-4B-Instruct-2507: not in the HF cache and the hub cannot be reached"
            " (offline): run `make download PRESET=simple` where there is internet (same HF_HOME), or point the"
            " setting at a local folder") in errors


def test_download_offline_names_the_model_it_cannot_fetch(tmp_path):
    done = subprocess.run([sys.executable, "-m", "stages.download", "--preset", str(PRESET_DIR / "simple.yaml")],
                          cwd=REPO, env=_offline_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: model.base Qwen/Qwen3-4B-Instruct-2507: not in the HF cache")
    # Its fix is where to run it, not the command that just failed.
    assert "run this `make download` on a machine with internet" in last and "PRESET=<preset>" not in last


def test_download_of_a_preset_with_nothing_on_the_hub_checks_the_provided_files(tmp_path):
    done = subprocess.run(["make", "--no-print-directory", "download", "PRESET=demo"], cwd=REPO,
                          env=_offline_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "data.ailuminate data/demo/ailuminate.jsonl: 12 prompts" in done.stdout
    assert "everything presets/demo.yaml needs is local" in done.stdout
    missing = subprocess.run(["make", "--no-print-directory", "download", "PRESET=demo",
                              f"SET=safety.safety_prompt={tmp_path / 'none.txt'}"], cwd=REPO,
                             env=_offline_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert missing.returncode != 0 and f"safety.safety_prompt {tmp_path / 'none.txt'}: missing" in missing.stderr
