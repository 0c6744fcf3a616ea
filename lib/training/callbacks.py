"""The Trainer's callbacks: a JSONL log of every logged step (with tokens/s), a progress bar
without the Trainer's dict prints, checkpoints readable as the umask allows, and a stop after N
steps (tests and benchmarks)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from tqdm.auto import tqdm
from transformers import TrainerCallback
from transformers.trainer_callback import ProgressCallback

from lib.io import readable_as_umask_allows


class JsonlLogCallback(TrainerCallback):
    """Each Trainer log as one JSON line (with tokens/s) in train_log.jsonl and one console line."""

    def __init__(self, path: Path, resume_step: int):
        self.path = path
        self.resume_step = resume_step
        self.last_time = None
        self.last_tokens = 0

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self._keep_entries_up_to(self.resume_step)
        self.last_time, self.last_tokens = time.perf_counter(), state.num_input_tokens_seen

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        now, tokens = time.perf_counter(), state.num_input_tokens_seen
        entry = {"step": state.global_step, "epoch": round(state.epoch or 0.0, 4), **logs}
        if "loss" in logs and now > self.last_time:
            entry["tokens_per_second"] = round((tokens - self.last_tokens) / (now - self.last_time), 1)
        self.last_time, self.last_tokens = now, tokens
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(entry) + "\n")
        if "loss" in logs:
            tqdm.write(f"step {state.global_step}/{state.max_steps} loss {logs['loss']:.4f}"
                       f" lr {logs.get('learning_rate', 0):.2e} grad_norm {logs.get('grad_norm', float('nan')):.3f}"
                       f" tokens/s {entry.get('tokens_per_second', 0):.0f}")

    def _keep_entries_up_to(self, step: int) -> None:
        # A resumed run repeats the steps after its checkpoint: drop their old entries, and the
        # end-of-run summary of an interrupted slice.
        if not self.path.is_file():
            return
        entries = [json.loads(line) for line in self.path.read_text(encoding="utf-8").splitlines() if line.strip()]
        kept = [json.dumps(e) for e in entries if e["step"] <= step and "train_loss" not in e]
        self.path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")


class BarOnlyProgress(ProgressCallback):
    """The Trainer's progress bar without its raw log dicts (JsonlLogCallback prints one line)."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        pass


class ReadableCheckpoints(TrainerCallback):
    """Each checkpoint's weights readable as the umask allows (lib/io.readable_as_umask_allows)."""

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            readable_as_umask_allows(Path(args.output_dir) / f"checkpoint-{state.global_step}")


class StopAfterSteps(TrainerCallback):
    """Save and stop once `steps` optimizer steps are done (time-sliced jobs; rerun to resume)."""

    def __init__(self, steps: int):
        self.steps = steps

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= self.steps:
            control.should_save = True
            control.should_training_stop = True
