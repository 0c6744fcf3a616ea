"""Bad inputs: exit code != 0, one `Error:` line naming the file (and line), and no artifact left
that a later stage would accept."""

import json
import re

import pytest
from click.testing import CliRunner

from stages import infer_ailuminate, infer_gsm8k, prep_fewshot, score_safety, tokenize
from tests.helpers import PRESET_DIR, make_problems, write_jsonl


def _gsm8k(tmp, text):
    (tmp / "train.jsonl").write_bytes(text if isinstance(text, bytes) else text.encode())
    return prep_fewshot, ["--set", f"data.gsm8k_train={tmp / 'train.jsonl'}"], tmp / "pool.jsonl"


def _ailuminate(tmp, name, text):
    (tmp / name).write_text(text)
    return infer_ailuminate, ["--set", f"data.ailuminate={tmp / name}", "--base-only"], \
        tmp / "artifacts" / "ailuminate_preds_b_base.jsonl"


def _safety(tmp, judge=None, prompt=None):
    write_jsonl(tmp / "artifacts" / "ailuminate_preds_b_base.jsonl", [{"id": "a", "prompt": "p", "response": "r"}])
    args = ["--base-only"]
    if judge is not None:
        args += ["--set", f"safety.safeguard_model={judge}"]
    if prompt is not None:
        args += ["--set", f"safety.safety_prompt={prompt}"]
    return score_safety, args, tmp / "artifacts" / "ailuminate_safety_b_base.jsonl"


def _pickle_only(tmp):
    folder = tmp / "guard"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"architectures": ["LlamaForSequenceClassification"]}))
    (folder / "pytorch_model.bin").write_bytes(b"not really a pickle")
    return folder


def _fewshot_wrong_count(tmp):
    write_jsonl(tmp / "artifacts" / "run_b" / "fewshot.jsonl", make_problems(5))
    write_jsonl(tmp / "test.jsonl", make_problems(2))
    return infer_gsm8k, ["--set", f"data.gsm8k_test={tmp / 'test.jsonl'}", "--base-only"], \
        tmp / "artifacts" / "gsm8k_preds_b_base.jsonl"


def _foreign_adapter(tmp):
    write_jsonl(tmp / "artifacts" / "run_b" / "fewshot.jsonl", make_problems(8))
    adapter = tmp / "artifacts" / "run_b" / "adapter"
    adapter.mkdir(parents=True)
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "org/another-model"}))
    (adapter / "training_complete.json").write_text("{}")
    (adapter / "adapter_model.safetensors").write_bytes(b"x")
    write_jsonl(tmp / "test.jsonl", make_problems(2))
    return infer_gsm8k, ["--set", f"data.gsm8k_test={tmp / 'test.jsonl'}"], tmp / "artifacts" / "gsm8k_preds_b.jsonl"


def _gsm8k_test(tmp, text):
    write_jsonl(tmp / "artifacts" / "run_b" / "fewshot.jsonl", make_problems(8))
    (tmp / "test.jsonl").write_text(text)
    return infer_gsm8k, ["--set", f"data.gsm8k_test={tmp / 'test.jsonl'}", "--base-only"], \
        tmp / "artifacts" / "gsm8k_preds_b_base.jsonl"


def _pool_drawn_with_seed_7(tmp):
    write_jsonl(tmp / "train.jsonl", make_problems(12))
    write_jsonl(tmp / "pool.jsonl", make_problems(8))
    (tmp / "pool.draw.json").write_text(json.dumps({"pool_size": 8, "seed": 7, "train_data": str(tmp / "train.jsonl")}))
    pool = tmp / "artifacts" / "run_b" / "fewshot.jsonl"
    return prep_fewshot, ["--set", f"data.gsm8k_train={tmp / 'train.jsonl'}"], pool


def _missing_refined(tmp):
    write_jsonl(tmp / "artifacts" / "run_b" / "fewshot.jsonl", make_problems(8))
    return tokenize, ["--set", f"data.refined_train={tmp / 'refined.jsonl'}"], \
        tmp / "artifacts" / "run_b" / "train_tokenized.jsonl"


def _preset(tmp, text):
    (tmp / "bad.yaml").write_text(text)
    return prep_fewshot, ["--preset", str(tmp / "bad.yaml")], tmp / "pool.jsonl"


good = json.dumps(make_problems(1)[0]) + "\n"
CASES = {
    "malformed JSONL line": (lambda t: _gsm8k(t, good + "{oops\n"), r"train\.jsonl:2: not a valid JSON line"),
    "missing question": (lambda t: _gsm8k(t, good + '{"answer": "#### 1"}\n'),
                         r"train\.jsonl:2: missing or empty field 'question'"),
    "missing answer": (lambda t: _gsm8k(t, good + '{"question": "q"}\n'),
                       r"train\.jsonl:2: missing or empty field 'answer'"),
    "gold answer without ####": (lambda t: _gsm8k(t, good + '{"question": "q", "answer": "4"}\n'),
                                 r"train\.jsonl:2: answer has no '#### N'"),
    "empty file": (lambda t: _gsm8k(t, ""), r"train\.jsonl: file is empty"),
    "non-UTF-8 bytes": (lambda t: _gsm8k(t, good.encode() + b'{"question": "\xff", "answer": "#### 1"}\n'),
                        r"train\.jsonl:2: not UTF-8"),
    "CSV without a prompt column": (lambda t: _ailuminate(t, "p.csv", "release_prompt_id,text\na,b\n"),
                                    r"p\.csv: no 'prompt_text' column"),
    "duplicated ids": (lambda t: _ailuminate(t, "p.jsonl", '{"id": "x", "prompt": "a"}\n{"id": "x", "prompt": "b"}\n'),
                       r"p\.jsonl: duplicated id 'x'"),
    "missing safety prompt": (lambda t: _safety(t, prompt=t / "nope.txt"),
                              r"nope\.txt: Safety Guidelines prompt not found"),
    "missing safeguard folder": (lambda t: _safety(t, judge=t / "no_guard"), r"no_guard: safeguard model not found"),
    "folder with only pickle weights": (lambda t: _safety(t, judge=_pickle_only(t)), r"guard: only pickle weights"),
    "unknown preset key": (lambda t: _preset(t, "train:\n  epoch: 2\n"), r"bad\.yaml: unknown key 'train\.epoch'"),
    "wrong type in a preset": (lambda t: _preset(t, "lora:\n  r: many\n"), r"bad\.yaml: key 'lora\.r' expects int"),
    "run name with a slash": (lambda t: (prep_fewshot, ["--run", "a/b"], t / "pool.jsonl"), r"run name 'a/b'"),
    "run name with ..": (lambda t: (prep_fewshot, ["--run", ".."], t / "pool.jsonl"), r"run name '\.\.'"),
    "adapter from another base model": (_foreign_adapter, r"adapter: adapter was trained on 'org/another-model'"),
    "few-shot file with the wrong count": (_fewshot_wrong_count, r"fewshot\.jsonl: has 5 examples, expected 8"),
    "gold answer that is not a number": (
        lambda t: _gsm8k_test(t, good + '{"question": "q", "answer": "#### about 45"}\n'),
        r"test\.jsonl:2: the answer's final '####' is not followed by a number \('#### about 45'\)"),
    "question that is a number": (lambda t: _gsm8k(t, good + '{"question": 5, "answer": "#### 5"}\n'),
                                  r"train\.jsonl:2: field 'question' must be a string, got int 5"),
    "pool drawn with another seed": (_pool_drawn_with_seed_7,
                                     r"pool\.jsonl: drawn with fewshot\.seed = 7, this run asks for 42"),
    "missing refined training file": (_missing_refined, r"refined\.jsonl: the preset's refined training file"),
    "learning rate not positive": (lambda t: (prep_fewshot, ["--set", "train.learning_rate=-1"], t / "pool.jsonl"),
                                   r"key 'train\.learning_rate' must be > 0, got -1\.0"),
}


@pytest.mark.parametrize("case", CASES)
def test_bad_input_fails_in_one_line_and_leaves_no_artifact(case, tmp_path, models_dir):
    setup, message = CASES[case]
    stage, extra, artifact = setup(tmp_path)
    args = ["--preset", str(PRESET_DIR / "demo.yaml"), "--run", "b", "--artifacts", str(tmp_path / "artifacts"),
            "--models-dir", str(models_dir), "--set", f"fewshot.path={tmp_path / 'pool.jsonl'}", *extra]
    # A case's own --preset or --run comes last, and click keeps the last value given.
    result = CliRunner().invoke(stage.main, args)
    assert result.exit_code != 0
    output = result.output.strip().splitlines()
    assert len(output) == 1 and output[0].startswith("Error: "), result.output
    assert re.search(message, output[0]), output[0]
    assert not artifact.exists()
