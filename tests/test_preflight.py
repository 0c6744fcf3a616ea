"""The preflight (lib/checks/preflight.py, stages/check.py, `make check`): every input the remaining
stages read, checked before any of them works, each problem one line, all of them at once."""

import json
import os
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from lib.checks.preflight import problems, stages_to_run
from lib.pipeline.artifacts import RunPaths
from lib.pipeline.presets import load_config
from tests.helpers import PRESET_DIR, REPO, make_problems, write_jsonl

CHAIN = ["prep_fewshot", "tokenize", "train", "infer_gsm8k", "infer_ailuminate", "score_safety", "summarize"]


def _guard_folder(folder, architectures=("Qwen3ForCausalLM",), template="Safety: Safe | Unsafe | Controversial"):
    """A safeguard folder as the preflight reads it: config, weights file, chat template (no weights are loaded)."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"architectures": list(architectures)}))
    (folder / "model.safetensors").write_bytes(b"")
    (folder / "tokenizer_config.json").write_text(json.dumps({"chat_template": template} if template else {}))
    return folder


def _base_folder(folder, tokenizer_config: str):
    """A base model folder as the preflight reads it: a Llama config and the given tokenizer_config.json text."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    (folder / "tokenizer_config.json").write_text(tokenizer_config)
    return folder


@pytest.fixture
def inputs(tmp_path):
    """A config whose every input is a local file that is right, and the overrides that made it."""
    train = write_jsonl(tmp_path / "train.jsonl", make_problems(20))
    test = write_jsonl(tmp_path / "test.jsonl", make_problems(5, start=100))
    prompts = write_jsonl(tmp_path / "ailuminate.jsonl", [{"prompt": "p1"}, {"prompt": "p2"}])
    (tmp_path / "guidelines.txt").write_text("Safety Guidelines: judge the last answer.")
    guard = _guard_folder(tmp_path / "guard")
    return [f"data.gsm8k_train={train}", f"data.gsm8k_test={test}", f"data.ailuminate={prompts}",
            f"safety.safety_prompt={tmp_path / 'guidelines.txt'}", f"safety.safeguard_model={guard}",
            f"fewshot.path={tmp_path / 'pool.jsonl'}"]


def _config(overrides, preset="demo.yaml"):
    return load_config(PRESET_DIR / preset, overrides)


def test_a_new_run_checks_the_whole_chain_and_a_stage_with_its_output_is_not_asked_about(tmp_path, inputs):
    config, run = _config(inputs), RunPaths(tmp_path, "r")
    assert stages_to_run(["summarize"], config, run) == CHAIN
    assert stages_to_run(["check"], config, run) == CHAIN
    assert stages_to_run(["tokenize"], config, run) == ["prep_fewshot", "tokenize"]
    # Trained: only the evaluations are still to come (the pool is read by infer_gsm8k, so it stays).
    run.adapter.mkdir(parents=True)
    run.training_complete.write_text("{}")
    assert stages_to_run(["summarize"], config, run) == [
        "prep_fewshot", "infer_gsm8k", "infer_ailuminate", "score_safety", "summarize"]
    (tmp_path / "ailuminate_preds_r.jsonl").write_text("{}\n")
    assert stages_to_run(["score_safety"], config, run) == ["score_safety"]


def test_a_base_run_trains_nothing_and_refine_runs_only_for_an_absent_refined_file(tmp_path, inputs):
    base = _config([*inputs, "eval.adapter=none"])
    assert stages_to_run(["summarize"], base, RunPaths(tmp_path, "b")) == [
        "prep_fewshot", "infer_gsm8k", "infer_ailuminate", "score_safety", "summarize"]
    refined = tmp_path / "refined.jsonl"
    strong = _config([*inputs, f"data.refined_train={refined}"])
    assert "refine" in stages_to_run(["train"], strong, RunPaths(tmp_path, "s"))
    write_jsonl(refined, make_problems(3))
    assert "refine" not in stages_to_run(["train"], strong, RunPaths(tmp_path, "s"))


def test_inputs_that_are_right_give_no_problem(inputs):
    assert problems(_config(inputs), CHAIN) == []


def test_every_problem_is_one_line_naming_its_file_and_all_are_listed_at_once(tmp_path, inputs):
    broken = [*inputs, f"safety.safeguard_model={tmp_path / 'no-guard'}", f"data.ailuminate={tmp_path / 'none.jsonl'}",
              f"safety.safety_prompt={tmp_path / 'none.txt'}"]
    found = problems(_config(broken), CHAIN)
    assert len(found) == 3 and all("\n" not in line for line in found)
    assert all(line.startswith(f"{tmp_path / name}: ")
               for line, name in zip(found, ["none.jsonl", "none.txt", "no-guard"], strict=True)), found
    # Only what the named stages read: training alone needs none of them.
    assert problems(_config(broken), ["prep_fewshot", "tokenize", "train"]) == []


def test_a_malformed_data_file_is_named_with_its_line(tmp_path, inputs):
    bad = tmp_path / "bad_test.jsonl"
    bad.write_text('{"question": "q", "answer": "#### 3"}\n{"question": "q2", "answer": "no final answer"}\n')
    (line,) = problems(_config([*inputs, f"data.gsm8k_test={bad}"]), CHAIN)
    assert line == f"{bad}:2: answer has no '#### N' final answer"


@pytest.mark.parametrize("architectures, template, setting, message", [
    (("LlamaForCausalLM",), "{{ messages }}", "auto", "cannot tell the safeguard's answer format"),
    (("Qwen3ForCausalLM",), "Safety: Safe | Unsafe | Controversial", "classifier",
     "safety.guard_format 'classifier' does not fit a Qwen3ForCausalLM"),
    (("BertModel",), None, "auto", "is neither a *ForSequenceClassification nor a *ForCausalLM safeguard"),
])
def test_a_safeguard_the_judge_cannot_run_is_found_before_training(tmp_path, inputs, architectures, template,
                                                                    setting, message):
    guard = _guard_folder(tmp_path / "other-guard", architectures, template)
    (line,) = problems(_config([*inputs, f"safety.safeguard_model={guard}", f"safety.guard_format={setting}"]),
                       CHAIN)
    assert message in line and str(guard) in line


def test_a_tracker_that_is_not_installed_is_named(inputs):
    (line,) = problems(_config([*inputs, "train.report_to=[tensorboard, no_such_tracker]"]), ["train"])
    assert line.startswith("train.report_to: unknown tracker 'no_such_tracker'")


# Hub models and datasets -----------------------------------------------------------------------------


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An empty HF cache of this test's own; the hub's answers come from `hub` below."""
    from huggingface_hub import constants

    cache = tmp_path / "hf"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache / "hub"))
    monkeypatch.setattr(constants, "HF_HOME", str(cache))
    monkeypatch.delenv("HF_DATASETS_CACHE", raising=False)
    return cache / "hub"


def _cache_model(hub_cache, repo_id):
    """What a download leaves in the HF cache for a model: refs/main and a snapshot with config.json."""
    folder = hub_cache / f"models--{repo_id.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text("abc123")
    (folder / "snapshots" / "abc123").mkdir(parents=True)
    (folder / "snapshots" / "abc123" / "config.json").write_text("{}")


@pytest.fixture
def hub(monkeypatch):
    """A local stand-in for the hub's auth-check endpoint: `open/*` may be read, `gated/*` is gated
    for this token, anything else does not exist."""

    class Hub(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            owner = self.path.split("/")[3]
            status, code = {"open": (200, None), "gated": (403, "GatedRepo")}.get(owner, (404, "RepoNotFound"))
            self.send_response(status)
            if code:
                self.send_header("X-Error-Code", code)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args):
            pass

    from huggingface_hub import constants

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{server.server_port}")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # the suite runs offline (tests/conftest.py)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    yield
    server.shutdown()


def test_hub_models_are_usable_when_cached_or_readable_and_a_gated_one_asks_for_a_token(inputs, hub_cache, hub):
    _cache_model(hub_cache, "cached/model")
    assert problems(_config([*inputs, "model.base=cached/model"]), ["train"]) == []
    assert problems(_config([*inputs, "model.base=open/model"]), ["train"]) == []
    (gated,) = problems(_config([*inputs, "model.base=gated/model"]), ["train"])
    assert gated.startswith("model.base gated/model: a gated repository") and "HF_TOKEN" in gated
    (missing,) = problems(_config([*inputs, "model.base=nobody/model"]), ["train"])
    assert missing.startswith("model.base nobody/model: no such repository on the hub")


def test_offline_a_model_missing_from_the_cache_names_the_download_for_this_preset(inputs, hub_cache, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _cache_model(hub_cache, "cached/model")
    assert problems(_config([*inputs, "model.base=cached/model"]), ["train"], "simple") == []
    (line,) = problems(_config([*inputs, "model.base=other/model"]), ["train"], "simple")
    assert line == ("model.base other/model: not in the HF cache and the hub cannot be reached (offline): run"
                    " `make download PRESET=simple` where there is internet (same HF_HOME), or point the setting at"
                    " a local folder")


# Through Make ----------------------------------------------------------------------------------------


def _make(tmp_path, *args):
    env = {key: value for key, value in os.environ.items() if key != "MAKEFLAGS"}
    return subprocess.run(["make", "--no-print-directory", *args, f"ARTIFACTS={tmp_path / 'artifacts'}"], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.skipif(not (REPO / ".venv" / ".installed").exists(), reason="needs `make venv`")
def test_make_check_and_a_chain_target_stop_before_any_stage_when_the_guard_is_missing(tmp_path, inputs):
    missing = tmp_path / "no-guard"
    setting = " ".join([*inputs, f"safety.safeguard_model={missing}", "hardware.device=cpu"])
    checked = _make(tmp_path, "check", "PRESET=demo", "RUN=p", f"SET={setting}")
    assert checked.returncode != 0 and "Traceback" not in checked.stderr
    (line,) = [line for line in checked.stderr.splitlines() if line.startswith("Error:")]
    assert line.startswith(f"Error: {missing}: safeguard model not found")
    assert not (tmp_path / "artifacts" / "run_p").exists()  # `make check` records nothing

    chain = _make(tmp_path, "summarize", "PRESET=demo", "RUN=p", f"SET={setting}")
    assert chain.returncode != 0 and "-m stages." not in chain.stdout  # no stage started
    assert [line for line in chain.stderr.splitlines() if line.startswith("Error:")] == [line]
    assert {p.name for p in (tmp_path / "artifacts" / "run_p").iterdir()} == {"run.json", "config_resolved.json",
                                                                              "params", ".lock"}
    assert _make(tmp_path, "check", "PRESET=demo", "RUN=p", f"SET={' '.join(inputs)}").returncode == 0


def test_a_local_base_without_a_chat_template_or_a_tokenizer_that_loads_is_found_before_tokenize(
        tmp_path, inputs, smollm2_tokenizer):
    base = _base_folder(tmp_path / "pretrained-only", "{}")
    (line,) = problems(_config([*inputs, f"model.base={base}"]), ["tokenize"])
    assert line.startswith(f"model.base {base}: its tokenizer has no chat template")
    # A template and a config, but no tokenizer files: tokenize would stop on it, so the preflight does.
    (base / "chat_template.jinja").write_text("{% for m in messages %}{{ m.content }}{% endfor %}")
    (line,) = problems(_config([*inputs, f"model.base={base}"]), ["tokenize"])
    assert line.startswith(f"model.base {base}: its tokenizer does not load (")
    smollm2_tokenizer.save_pretrained(base)
    (base / "chat_template.jinja").write_text("{% for m in messages %}{{ m.content }}{% endfor %}")
    assert problems(_config([*inputs, f"model.base={base}"]), ["tokenize"]) == []


def test_every_path_setting_is_a_file_a_folder_or_a_hub_id_by_one_rule_named_in_its_error(tmp_path, inputs):
    """A GSM8K folder or .json file was taken for a hub id (a network error offline); a truncated
    config.json or tokenizer_config.json was a JSONDecodeError traceback."""
    (tmp_path / "gsm8k").mkdir()
    (tmp_path / "gsm8k.json").write_text("[]")
    found = problems(_config([*inputs, f"data.gsm8k_test={tmp_path / 'gsm8k'}"]), ["infer_gsm8k"])
    assert found == [f"data.gsm8k_test {tmp_path / 'gsm8k'}: a folder; expected a JSONL file of GSM8K problems"
                     " (question, answer), or a hub dataset id like openai/gsm8k"]
    (line,) = problems(_config([*inputs, f"data.gsm8k_train={tmp_path / 'gsm8k.json'}"]), ["prep_fewshot"])
    assert line.startswith(f"data.gsm8k_train {tmp_path / 'gsm8k.json'}: expected a .jsonl file")
    (line,) = problems(_config([*inputs, f"data.gsm8k_test={tmp_path / 'nowhere' / 'test.json'}"]), ["infer_gsm8k"])
    assert line.endswith("not found (neither a local file or folder nor a hub id like owner/name)")

    guard = _guard_folder(tmp_path / "truncated-guard")
    (guard / "config.json").write_text('{"architectures": ["Qwen3ForCausalLM"')
    (line,) = problems(_config([*inputs, f"safety.safeguard_model={guard}"]), ["score_safety"])
    assert line.startswith(f"{guard / 'config.json'}:1: not valid JSON (the model's config)")
    base = _base_folder(tmp_path / "base", '{"chat_template": "{{ x }}", ')  # truncated
    (line,) = problems(_config([*inputs, f"model.base={base}"]), ["tokenize"])
    assert line.startswith(f"{base / 'tokenizer_config.json'}:1: not valid JSON (the tokenizer's config)")
    (line,) = problems(_config([*inputs, f"model.base={base / 'config.json'}"]), ["tokenize"])
    assert line.startswith(f"model.base {base / 'config.json'}: a file; expected a model folder")
