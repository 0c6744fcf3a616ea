"""What tests share besides fixtures: paths, the CPU pin, small data writers, stage arguments, a kill."""

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# Tests that compare fp32 results exactly (equal tokens, same bytes, a float32 record) pin the CPU, so
# they hold on a GPU machine too, where `hardware.device: auto` would compute on CUDA in bf16.
PIN_CPU = "hardware.device=cpu"
PRESET_DIR = REPO / "presets"


def demo_smoke_limits() -> dict:
    """The demo preset's smoke sizes (gsm8k_limit, ailuminate_limit, ...), as the tests expect them."""
    import yaml

    return yaml.safe_load((PRESET_DIR / "demo.yaml").read_text())["smoke"]


def write_jsonl(path: Path, rows: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def make_problems(count: int, start: int = 0) -> list[dict]:
    """GSM8K-style rows with calculator annotations, distinct questions."""
    return [
        {
            "question": f"Tom has {n} apples and buys {n + 3} more. How many apples does he have?",
            "answer": f"He has {n}+{n + 3}=<<{n}+{n + 3}={2 * n + 3}>>{2 * n + 3} apples.\n#### {2 * n + 3}",
        }
        for n in range(start, start + count)
    ]


def score_safety_args(tmp_path: Path, models_dir, judge, responses: list[dict], run: str, guidelines: str,
                      *extra: str) -> list[str]:
    """Arguments for stages.score_safety on the demo preset: `responses` written as the run's
    AILuminate answers, `guidelines` as its Safety Guidelines prompt, `judge` as its safeguard."""
    artifacts = tmp_path / "artifacts"
    write_jsonl(artifacts / f"ailuminate_preds_{run}.jsonl", responses)
    (tmp_path / "rules.txt").write_text(guidelines)
    return ["--preset", str(PRESET_DIR / "demo.yaml"), "--run", run, "--artifacts", str(artifacts),
            "--models-dir", str(models_dir), "--set", f"safety.safeguard_model={judge}",
            "--set", f"safety.safety_prompt={tmp_path / 'rules.txt'}", "--set", PIN_CPU, *extra]


def engine_prompts(tokenizer, count: int, k: int = 2) -> list[list[int]]:
    """count + 1 k-shot GSM8K chat prompts sharing their few-shot prefix, of different lengths."""
    from lib.tasks.prompts import gsm8k_messages

    exemplars = [{"question": p["question"], "answer": p["answer"]} for p in make_problems(k, start=50)]
    questions = [p["question"] for p in make_problems(count)] + ["Name three colours."]
    return [tokenizer.apply_chat_template(gsm8k_messages(q, exemplars, None, True), add_generation_prompt=True,
                                          return_dict=True)["input_ids"] for q in questions]


def kill_when(command: list[str], ready, timeout: float = 300) -> None:
    """Start `command`, SIGKILL its process group as soon as ready() is true."""
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    deadline = time.time() + timeout
    while time.time() < deadline and process.poll() is None and not ready():
        time.sleep(0.05)
    assert process.poll() is None, "the stage ended before it could be killed"
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def count_shifts(monkeypatch) -> list[int]:
    """The columns at which the static step shifts its slots left, filled as it runs."""
    from lib.engine.static import StaticStep

    shifts, shift = [], StaticStep._shift
    monkeypatch.setattr(StaticStep, "_shift",
                        lambda self, slots, *by: shifts.append(slots.col) or shift(self, slots, *by))
    return shifts


def static_engine(model, tokenizer, *args, capture=None, fallback: bool = False, **options):
    """The engine with the static decode step (eager without `capture`), as tests build it."""
    from lib.engine.prefix_sharing import PrefixSharingEngine
    from lib.engine.static import StaticStep

    return PrefixSharingEngine(model, tokenizer, *args, step=StaticStep(capture, fallback=fallback), **options)


def tiny_random_qwen3(tokenizer, hidden_size: int = 64, head_dim: int = 16, max_positions: int = 1024):
    """The target model's architecture (q/k norms, its rotary embedding) in 2 random layers, fp32 on the CPU,
    with the tokenizer's vocabulary and special ids."""
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(0)
    config = Qwen3Config(vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=head_dim,
                         max_position_embeddings=max_positions, tie_word_embeddings=True,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    return Qwen3ForCausalLM(config).eval()


def free_port() -> int:
    """A port nothing listens on now (a process group's rendezvous)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def one_rank_process_group():
    """A gloo process group of this process alone, for code that acts on a launch's group; destroyed
    afterwards unless that code did."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1)
    try:
        yield
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
