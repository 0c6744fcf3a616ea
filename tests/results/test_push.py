"""`make push` refuses what it must not upload, each with one line saying what to run."""

import json

import pytest

from lib.errors import InputError
from lib.results.push import prepare_upload


def _run(artifacts, name, *, trained=True, summarized=True):
    folder = artifacts / f"run_{name}"
    adapter = folder / "adapter"
    adapter.mkdir(parents=True)
    (adapter / "adapter_config.json").write_text("{}")
    (adapter / "adapter_model.safetensors").write_bytes(b"weights")
    if trained:
        (adapter / "training_complete.json").write_text(json.dumps({"base_model_path": "/home/me/models"}))
    if summarized:
        (adapter / "README.md").write_text("---\nlibrary_name: peft\n---\n")
        (folder / "summary.json").write_text("{}")


def test_a_summarized_run_is_sent_private_without_its_training_record(tmp_path):
    _run(tmp_path, "s")
    plan = prepare_upload(tmp_path, "s", "me/s")
    assert plan.private and sorted(plan.files) == ["README.md", "adapter_config.json", "adapter_model.safetensors"]
    assert not prepare_upload(tmp_path, "s", "me/s", public=True).private


@pytest.mark.parametrize("trained, summarized, message", [
    (True, False, "run 's' is not summarized: run `make summarize RUN=s` first"),
    (False, True, "no finished adapter (run `make train RUN=s`; a base run has none to push)"),
])
def test_an_unfinished_run_is_refused(tmp_path, trained, summarized, message):
    _run(tmp_path, "s", trained=trained, summarized=summarized)
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        prepare_upload(tmp_path, "s", "me/s")


def test_a_repository_id_must_be_owner_slash_name(tmp_path):
    _run(tmp_path, "s")
    with pytest.raises(InputError, match="REPO 'just-a-name': expected a Hub repository id"):
        prepare_upload(tmp_path, "s", "just-a-name")


@pytest.mark.parametrize("endpoint", ["http://127.0.0.1:9", "http://no-such-host.invalid"], ids=["refused", "dns"])
def test_push_without_a_network_is_one_error_line_not_a_traceback(tmp_path, endpoint):
    """The hub's HTTP client raises its own connection errors (httpx/httpx2), not Python's."""
    import os
    import subprocess

    from tests.helpers import REPO

    _run(tmp_path, "s")
    env = {key: value for key, value in os.environ.items() if key not in ("MAKEFLAGS", "HF_HUB_OFFLINE")}
    done = subprocess.run(["make", "--no-print-directory", "push", "RUN=s", "REPO=me/s", f"ARTIFACTS={tmp_path}"],
                          cwd=REPO, env={**env, "HF_ENDPOINT": endpoint, "HF_TOKEN": "hf_not_a_real_token"},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode != 0 and "Traceback" not in done.stderr, done.stderr[-2000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("Error:")]
    assert errors == ["Error: push me/s: the hub cannot be reached (offline, or HF_HUB_OFFLINE is set):"
                      " run `make push` where there is internet"]
    assert "hf_not_a_real_token" not in done.stdout + done.stderr
