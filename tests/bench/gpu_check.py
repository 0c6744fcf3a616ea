"""`make gpu-check`: what a lent GPU should run, in one go, ending in one table.

    make gpu-check                       # CARD=h100 (default) or h200: the peaks the figures are set against
    OUT=/some/folder make gpu-check      # the table is also written there as gpu_check.md

Steps (each a line of the Makefile recipe, see `make -n gpu-check`):
  require  stops with one line when torch cannot use CUDA;
  pytest   `pytest -m gpu` (the GPU tests: kernels, engine vs generate in bf16, host waits, QLoRA);
  bench    tests/bench/bench_gpu.py at Qwen3-4B's shapes (training, decoding, attention kernels);
  chain    the whole pipeline (prep_fewshot, tokenize, train a few 4-bit steps, infer_gsm8k on 64
           questions, infer_ailuminate, score_safety with the embedded 135M judge, summarize) through
           `make smoke PRESET=simple` on a random-weight model of Qwen3-4B's shape saved locally;
  table    one markdown table of every check (pass/fail) and the figures the steps printed.
Everything it needs is in the repository (no hub): the questions are GSM8K-style ones it writes.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import click
from common import REPO  # this folder is on sys.path when run as a script; common puts the repository there


@click.group()
def main():
    """gpu-check steps."""


@main.command()
def require():
    """Stop with one line unless torch can use CUDA."""
    import torch

    if not torch.cuda.is_available():
        from lib.devices import cuda_report

        raise click.ClickException(f"gpu-check needs CUDA: {cuda_report()}")
    print(f"gpu-check: {torch.cuda.get_device_name()}, torch {torch.__version__}, CUDA {torch.version.cuda}")


def write_problems(path: Path, count: int, start: int) -> Path:
    rows = [{"question": f"Tom has {n} apples and buys {n + 3} more. How many apples does he have?",
             "answer": f"He has {n}+{n + 3}={2 * n + 3} apples.\n#### {2 * n + 3}"}
            for n in range(start, start + count)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


@main.command()
@click.option("--work", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--tiny", is_flag=True, help="a 2-layer model of the same kind on the CPU: checks the wiring")
def chain(work: Path, tiny: bool):
    """The pipeline on a random-weight Qwen3-4B-shaped model with the embedded tokenizer."""
    import torch
    from bench_gpu import QWEN3_4B, TINY
    from transformers import AutoTokenizer, Qwen3Config, Qwen3ForCausalLM

    from lib.models import resolve_model_path

    work.mkdir(parents=True, exist_ok=True)
    models = work / "models"
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path("embedded:smollm2-135m-instruct", models))
    folder = work / "qwen3-4b-shaped"
    if not (folder / "model.safetensors.index.json").is_file() and not (folder / "model.safetensors").is_file():
        torch.manual_seed(0)
        shape = {**(TINY if tiny else QWEN3_4B), "bos_token_id": tokenizer.bos_token_id,
                 "eos_token_id": tokenizer.eos_token_id,
                 "pad_token_id": tokenizer.pad_token_id}
        if tiny:
            shape["vocab_size"] = len(tokenizer)
        with torch.device("cpu" if tiny else "cuda"):  # random init on the card: seconds, not a minute of CPU
            model = Qwen3ForCausalLM(Qwen3Config(**shape)).to(torch.bfloat16)
        model.save_pretrained(folder, safe_serialization=True)
        tokenizer.save_pretrained(folder)
        del model
    train, test = write_problems(work / "train.jsonl", 240, 0), write_problems(work / "test.jsonl", 64, 1000)
    sets = (f"model.base={folder} data.gsm8k_train={train} data.gsm8k_test={test} fewshot.path={work / 'pool.jsonl'}"
            " data.ailuminate=data/demo/ailuminate.jsonl smoke.gsm8k_limit=64 smoke.ailuminate_limit=12"
            " safety.safeguard_model=embedded:smollm2-135m-instruct safety.safety_prompt=data/demo/safety_prompt.txt"
            " safety.guard_format=safe_unsafe safety.layout=user_turn safety.verdict=constrained"
            f" eval.max_new_tokens={16 if tiny else 256} safety.max_new_tokens=4 train.save_steps=1000")
    env = {**os.environ, "MODELS_DIR": str(models)}
    start = time.perf_counter()
    done = subprocess.run(["make", "--no-print-directory", "smoke", "PRESET=simple", "NPROC=1",
                           f"ARTIFACTS={work / 'artifacts'}", f"SET={sets}"], cwd=REPO, env=env, text=True,
                          capture_output=True)
    seconds = time.perf_counter() - start
    print(done.stdout[-6000:] + done.stderr[-3000:])
    metrics = work / "artifacts" / "gsm8k_metrics_simple-smoke.json"
    record = {"returncode": done.returncode, "seconds": round(seconds, 1),
              "summary": (work / "artifacts" / "run_simple-smoke" / "summary.json").is_file(),
              "gsm8k_questions": json.loads(metrics.read_text())["questions"] if metrics.is_file() else 0}
    (work / "chain.json").write_text(json.dumps(record))
    sys.exit(done.returncode)


def _pytest_row(text: str) -> tuple[str, str]:
    summary = [line for line in text.splitlines() if re.search(r"\d+ (passed|failed|error)", line)]
    last = summary[-1].strip("= ") if summary else "no summary (did pytest run?)"
    ok = bool(summary) and not re.search(r"\d+ (failed|error)", last)
    return ("PASS" if ok else "FAIL"), last


@main.command()
@click.option("--work", type=click.Path(file_okay=False, path_type=Path), required=True)
def table(work: Path):
    """One markdown table from the steps' outputs; also $OUT/gpu_check.md when OUT is set."""
    rows = []
    pytest_text = (work / "pytest.txt").read_text() if (work / "pytest.txt").is_file() else ""
    rows.append(("pytest -m gpu", *_pytest_row(pytest_text)))
    bench_text = (work / "bench.txt").read_text() if (work / "bench.txt").is_file() else ""
    figures = [line.strip() for line in bench_text.splitlines()
               if line.startswith(("QLoRA train", "decode,", "  engine", "attention,"))]
    rows.append(("bench_gpu.py (Qwen3-4B shapes)", "PASS" if figures else "FAIL",
                 "<br>".join(figures) or "no figures printed"))
    chain_file = work / "chain.json"
    chain_record = json.loads(chain_file.read_text()) if chain_file.is_file() else {"returncode": None}
    chain_ok = chain_record.get("returncode") == 0 and chain_record.get("summary")
    rows.append(("whole chain, make smoke PRESET=simple (random Qwen3-4B shape)", "PASS" if chain_ok else "FAIL",
                 f"{chain_record.get('seconds', '?')} s, {chain_record.get('gsm8k_questions', 0)} GSM8K questions,"
                 f" exit {chain_record.get('returncode')}"))
    lines = ["| check | result | figures |", "|---|---|---|"]
    lines += [f"| {name} | {result} | {detail} |" for name, result, detail in rows]
    text = "\n".join(lines) + "\n"
    print(text)
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "gpu_check.md").write_text(text, encoding="utf-8")
    sys.exit(0 if all(result == "PASS" for _, result, _ in rows) else 1)


if __name__ == "__main__":
    main()
