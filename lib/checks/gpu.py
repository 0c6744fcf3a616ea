"""The GPU check in parts, each one self-contained command that fits a borrowed node's job
(arithmetic in docs/machines.md: two machine starts and parts 1 and 2 fit a 15-minute loan).

part1: the environment, the random Qwen3-4B-shaped model (built once per machine), `pytest -m gpu`,
       bench_gpu.py's decoding at the simple preset's shapes and the attention kernels.
part2: the environment, the model (reused where part 1 left it, else built again), bench_gpu.py's
       QLoRA training, and the whole chain (prep_fewshot ... summarize at smoke sizes on that model,
       the judge the bundle's tiny model).
part3 (optional): the decoding at the medium and strong presets' shapes.
Each step runs as its own process with its log streaming into <out>/<step>.txt, and its table row
is appended to <out>/gpu_check.md the moment it ends: a job killed by its time limit keeps every
row and log it reached. A part has a time budget; a step gets what is left of it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lib.checks.bundle import INSTALLED
from lib.console import last_line
from lib.pipeline.artifacts import RunPaths
from lib.pipeline.stage_graph import chain

REPO = Path(__file__).resolve().parents[2]
TABLE = "gpu_check.md"
MODEL = "qwen3-4b-shaped"


@dataclass(frozen=True)
class Step:
    name: str  # the table's row
    log: str  # <out>/<log>.txt
    command: list[str]
    timeout: int  # seconds, at most (the part's budget may leave less)
    figures: Callable[[str, int], tuple[bool, str]]  # (log text, exit code) -> (passed, what it measured)


def _exit_only(text: str, code: int) -> tuple[bool, str]:
    return code == 0, last_line(text)


def _pytest(text: str, code: int) -> tuple[bool, str]:
    summary = [line.strip("= ") for line in text.splitlines() if re.search(r"\d+ (passed|failed|error|skipped)", line)]
    return code == 0 and bool(summary), summary[-1] if summary else "no pytest summary"


def _bench(prefixes: tuple[str, ...]) -> Callable[[str, int], tuple[bool, str]]:
    def figures(text: str, code: int) -> tuple[bool, str]:
        lines = [line.strip() for line in text.splitlines() if line.startswith(prefixes)]
        return code == 0 and bool(lines), "<br>".join(lines) or "no figures printed"
    return figures


def _chain(text: str, code: int) -> tuple[bool, str]:
    found = [line.strip() for line in text.splitlines()
             if line.startswith(("chain: every", "infer_gsm8k: strict-match", "score_safety: safety rate"))
             or "exited" in line or "hardware.decode auto ->" in line]
    return code == 0, "<br>".join(found) or last_line(text)


def _environment(text: str, code: int) -> tuple[bool, str]:
    found = [re.sub(r" from \S+$", "", line.removeprefix("environment: ").strip()) for line in text.splitlines()
             if line.startswith("environment: ")]
    return code == 0 and bool(found), "; ".join(found) or "no output"


PARTS = ("part1", "part2", "part3")
BUDGET = 300  # seconds a part may take: two machine starts (<= 2.5 min each) and two parts fit a 15-minute loan


def steps(part: str, work: Path, bundle: Path, card: str, tiny: bool) -> list[Step]:
    """The part's steps, each with its own time limit (the part's budget may leave less). Estimates for
    one H100/H200 in docs/machines.md: part1 and part2 ~4-4.5 minutes each, part3 (optional) ~3."""
    python, check = sys.executable, [sys.executable, "-m", "stages.gpu_check"]
    model, size = work / MODEL, (["--tiny"] if tiny else [])
    bench = [python, "tests/bench/bench_gpu.py", "--card", card, "--model-folder", str(model), *size]
    decode_figures = _bench(("card ", "decode,", "  engine", "attention,"))
    environment = Step("environment", "environment", [*check, "environment"], 60, _environment)
    build = Step("random Qwen3-4B-shaped model (built once per machine)", "model",
                 [*check, "model", "--work", str(work), "--bundle", str(bundle), *size], 120, _exit_only)
    if part == "part1":
        return [environment, build,
                Step("pytest -m gpu", "pytest", [python, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider",
                                                 "-o", "addopts=", "tests"], 150, _pytest),
                Step("bench_gpu.py decoding (simple preset) and attention, Qwen3-4B shapes", "bench_decode",
                     [*bench, "--only", "decode", "--presets", "simple", "--only", "attention"], 120, decode_figures)]
    if part == "part2":
        return [environment, build,
                Step("bench_gpu.py QLoRA training (Qwen3-4B shape)", "bench_train", [*bench, "--only", "train"], 90,
                     _bench(("card ", "QLoRA train",))),
                Step("whole chain, prep_fewshot .. summarize (Qwen3-4B shape)", "chain",
                     [*check, "chain", "--work", str(work), "--bundle", str(bundle), *size], 240, _chain)]
    return [environment, build,
            Step("bench_gpu.py decoding (medium and strong presets), Qwen3-4B shapes", "bench_decode_more",
                 [*bench, "--only", "decode", "--presets", "medium", "strong"], 240, decode_figures)]


def run_part(part: str, out: Path, work: Path, bundle: Path, card: str, budget: int, tiny: bool = False,
             echo=print) -> bool:
    """Every step of the part in order, each row appended to <out>/gpu_check.md as it ends; True when all pass.
    A step that fails does not stop the later ones (each says something of its own), except the model
    they all need; a step that runs out of the budget is killed and marked so."""
    out.mkdir(parents=True, exist_ok=True)
    table = out / TABLE
    if not table.is_file():
        table.write_text("| part | check | result | seconds | figures |\n|---|---|---|---|---|\n", encoding="utf-8")
    deadline, results = time.monotonic() + budget, []
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "GSM8K_CHECK_MODELS": str(bundle / "models"),
           "TQDM_DISABLE": "1", "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    planned = steps(part, work, bundle, card, tiny)
    for step in planned:
        left = int(deadline - time.monotonic())
        start, log = time.monotonic(), out / f"{step.log}.txt"
        if left < 10:
            passed, figures, code = False, f"not run: the part's {budget} s budget is spent", None
        else:
            with log.open("w", encoding="utf-8") as sink:
                try:
                    code = subprocess.run(step.command, cwd=REPO, env=env, stdout=sink, stderr=subprocess.STDOUT,
                                          timeout=min(step.timeout, left)).returncode
                except subprocess.TimeoutExpired:
                    code = None
            text = log.read_text(encoding="utf-8", errors="replace")
            passed, figures = step.figures(text, code) if code is not None else (False, "killed: out of time")
        seconds = time.monotonic() - start
        row = f"| {part} | {step.name} | {'PASS' if passed else 'FAIL'} | {seconds:.0f} | {figures} |"
        with table.open("a", encoding="utf-8") as sink:
            sink.write(row + "\n")
        echo(f"gpu-check {part}: {step.name}: {'PASS' if passed else 'FAIL'} in {seconds:.0f} s (log {log})")
        results.append(passed)
        if step.log in ("model", "environment") and not passed:
            break  # every later step needs the model (and a working environment)
    echo(table.read_text(encoding="utf-8"))
    return all(results) and len(results) == len(planned)


def write_problems(path: Path, count: int, start: int) -> Path:
    """GSM8K-style questions whose answers are known: the chain needs no dataset."""
    rows = [{"question": f"Tom has {n} apples and buys {n + 3} more. How many apples does he have?",
             "answer": f"He has {n}+{n + 3}={2 * n + 3} apples.\n#### {2 * n + 3}"}
            for n in range(start, start + count)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def chain_commands(work: Path, bundle: Path, tiny: bool) -> list[list[str]]:
    """`make smoke PRESET=simple`'s stages in its order, run directly (no make on the node), on the
    model folder with the bundle's tiny judge."""
    from lib.checks.assets import CHECK_TOKENIZER

    judge = bundle / "models" / CHECK_TOKENIZER
    train, test = write_problems(work / "train.jsonl", 240, 0), write_problems(work / "test.jsonl", 64, 1000)
    sets = {"model.base": work / MODEL, "data.gsm8k_train": train, "data.gsm8k_test": test,
            "fewshot.path": work / "pool.jsonl", "data.ailuminate": "data/demo/ailuminate.jsonl",
            "smoke.gsm8k_limit": 64, "smoke.ailuminate_limit": 12, "safety.safeguard_model": judge,
            "safety.safety_prompt": "data/demo/safety_prompt.txt", "safety.guard_format": "safe_unsafe",
            "safety.layout": "user_turn", "safety.verdict": "constrained",
            "eval.max_new_tokens": 16 if tiny else 256, "safety.max_new_tokens": 4, "train.save_steps": 1000}
    options = ["--run", "simple-smoke", "--preset", "presets/simple.yaml", "--smoke",
               "--artifacts", str(work / "artifacts"), "--models-dir", str(work / "models"),
               *[arg for key, value in sets.items() for arg in ("--set", f"{key}={value}")]]
    return [[sys.executable, "-m", f"stages.{stage}", *options] for stage in chain()]


def run_chain(work: Path, bundle: Path, tiny: bool) -> int:
    """Each stage in turn (its output into this process's), stopping at the first that fails."""
    start = time.perf_counter()
    for command in chain_commands(work, bundle, tiny):
        print(f"chain: {' '.join(command[2:4])}", flush=True)
        code = subprocess.run(command, cwd=REPO).returncode
        if code != 0:
            print(f"chain: {command[2]} exited {code} after {time.perf_counter() - start:.0f} s")
            return code
    run = RunPaths(work / "artifacts", "simple-smoke")
    metrics = json.loads(run.evaluation("infer_gsm8k", "metrics").read_text())
    summary = run.summary
    choice = metrics["generation"]["decode_choice"]
    print(f"chain: every stage in {time.perf_counter() - start:.0f} s; {metrics['questions']} GSM8K questions;"
          f" decode {choice['step']} ({choice['why']}); summary {'written' if summary.is_file() else 'MISSING'}")
    return 0 if summary.is_file() else 1


QWEN3_4B = dict(  # Qwen/Qwen3-4B-Instruct-2507 config.json
    vocab_size=151936, hidden_size=2560, intermediate_size=9728, num_hidden_layers=36, num_attention_heads=32,
    num_key_value_heads=8, head_dim=128, max_position_embeddings=262144, rope_theta=5_000_000.0,
    rms_norm_eps=1e-6, tie_word_embeddings=True, bos_token_id=151643, eos_token_id=151645,
)
TINY = {**QWEN3_4B, "vocab_size": 49152, "hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 32}


def save_random_qwen3(shape: dict, folder: Path) -> int:
    """A Qwen3 of `shape` with random bf16 weights (seed 0) saved as safetensors; returns its parameter count."""
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(0)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):  # random init of 4B: seconds on a card
        model = Qwen3ForCausalLM(Qwen3Config(**shape)).to(torch.bfloat16)
    model.save_pretrained(folder, safe_serialization=True)
    return sum(p.numel() for p in model.parameters())


def build_model(work: Path, bundle: Path, tiny: bool) -> Path:
    """<work>/qwen3-4b-shaped: Qwen3-4B's architecture with random bf16 weights and the bundle's tokenizer
    (its special ids), saved as safetensors so the 4-bit loader quantizes it as the real checkpoint;
    kept when present, so the part that comes second on a node reuses it."""
    from transformers import AutoTokenizer

    from lib.checks.assets import CHECK_TOKENIZER

    folder = work / MODEL
    if (folder / "model.safetensors.index.json").is_file() or (folder / "model.safetensors").is_file():
        print(f"model: {folder} is there already (reused)")
        return folder
    tokenizer = AutoTokenizer.from_pretrained(bundle / "models" / CHECK_TOKENIZER)
    shape = {**(TINY if tiny else QWEN3_4B), "bos_token_id": tokenizer.bos_token_id,
             "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id}
    start = time.perf_counter()
    staging = work / f".{MODEL}.partial"
    parameters = save_random_qwen3(shape, staging)
    tokenizer.save_pretrained(staging)
    staging.rename(folder)  # complete or absent: a killed build is redone
    seconds = time.perf_counter() - start
    print(f"model: {folder}, {parameters / 1e9:.2f}B parameters, built and saved in {seconds:.0f} s")
    return folder


LIBRARIES = ("torch", "transformers", "peft", "bitsandbytes", "accelerate", "huggingface_hub", "datasets",
             "tokenizers", "safetensors", "jsonlines", "click")


def describe_environment() -> bool:
    """One line per library (version, "(bundle)" where the carried wheels hold it, and where it is imported from),
    the device, and whether make is there; False without CUDA."""
    import importlib
    import shutil

    import torch

    for name in LIBRARIES:
        try:
            module = importlib.import_module(name)
            origin = Path(module.__file__).parent.parent
            carried = " (bundle)" if (origin / INSTALLED).is_file() else ""  # the site folder lib/checks/bundle.py made
            print(f"environment: {name} {getattr(module, '__version__', '?')}{carried} from {origin}")
        except ImportError as err:
            print(f"environment: {name} MISSING ({err})")
    make = shutil.which("make")
    print(f"environment: make {'at ' + make if make else 'absent (the check needs none)'}")
    if not torch.cuda.is_available():
        from lib.devices import cuda_report

        print(f"environment: no CUDA: {cuda_report()}")
        return False
    print(f"environment: {torch.cuda.get_device_name()}, torch {torch.__version__}, CUDA {torch.version.cuda},"
          f" {torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB")
    return True
