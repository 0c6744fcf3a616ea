"""QLoRA fine-tuning with transformers' Trainer: LoRA, batches, loss, logging, resume.

The base comes from lib/models.py (4-bit nf4 through bitsandbytes, also on CPU, unless
`quantization: none`; prepared with peft's `prepare_model_for_kbit_training`) and is wrapped with
LoRA on the projections found in it.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import TrainerCallback, TrainingArguments
from transformers.trainer_callback import ProgressCallback

from lib.pipeline.artifacts import CHECKPOINT_PREFIX, COMPLETE_FILE, TRAINING_OUTPUTS, checkpoint_step, supersede
from lib.chat import IGNORE_INDEX
from lib.devices import DEFAULT_DISTRIBUTED_TIMEOUT_MINUTES, process_state, resolve_compute_dtype
from lib.errors import InputError
from lib.hub import hub_errors
from lib.io import atomic_write_json, made_from, mark_made_from, read_jsonl
from lib.models import load_base_for_training

LORA_CANDIDATES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def discover_lora_targets(model, candidates: tuple[str, ...] = LORA_CANDIDATES) -> list[str]:
    """The candidate projection names that exist as linear layers in this model."""
    # bitsandbytes' Linear4bit subclasses torch.nn.Linear, so one check covers both bases.
    found = {name.rsplit(".", 1)[-1] for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)}
    return [name for name in candidates if name in found]


def attach_lora(model, r: int, alpha: int, dropout: float, target_modules: list[str] | None):
    from peft import LoraConfig, get_peft_model

    targets = target_modules or discover_lora_targets(model)
    if not targets:
        raise InputError("lora.target_modules: none of q/k/v/o/gate/up/down_proj found in the model; set them")
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets,
                        bias="none", task_type="CAUSAL_LM")
    return get_peft_model(model, config), targets


def load_tokenized(path: str | Path):
    """The tokenized JSONL as a datasets.Dataset with input_ids and labels."""
    import datasets

    rows = read_jsonl(path, what="tokenized examples")
    for row in rows:
        if not isinstance(row.get("input_ids"), list) or len(row["input_ids"]) != len(row.get("labels") or []):
            raise InputError(f"{path}:{row['_line']}: input_ids and labels must be lists of equal length")
    return datasets.Dataset.from_dict({
        "input_ids": [row["input_ids"] for row in rows],
        "labels": [row["labels"] for row in rows],
    })


def last_checkpoint(folder: Path) -> Path | None:
    """The checkpoint with the highest step that the Trainer finished writing."""
    done = [p for p in folder.glob(f"{CHECKPOINT_PREFIX}*") if (p / "trainer_state.json").is_file()]
    return max(done, key=lambda p: checkpoint_step(p.name), default=None)


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


class StopAfterSteps(TrainerCallback):
    """Save and stop once `steps` optimizer steps are done (time-sliced jobs; rerun to resume)."""

    def __init__(self, steps: int):
        self.steps = steps

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= self.steps:
            control.should_save = True
            control.should_training_stop = True


def make_collator(tokenizer, packing: str, logits: str):
    """The batch builder for `train.packing` and `train.logits`.

    padding_free: transformers' DataCollatorWithFlattening puts a batch's examples back to back in
    one row with position ids restarting at 0 per example (attention stays within each example:
    transformers derives the mask from the position ids) and -100 at each example's first label.
    padded: a row per example, input_ids padded with the pad id and labels with -100 (a real
    <|im_end|> label that is also the pad token keeps its id).
    """
    from transformers import DataCollatorForSeq2Seq, DataCollatorWithFlattening

    if packing == "padding_free":
        collator = DataCollatorWithFlattening(separator_id=IGNORE_INDEX)
    else:
        collator = DataCollatorForSeq2Seq(tokenizer, padding="longest", label_pad_token_id=IGNORE_INDEX)
    return collator if logits == "all" else LabelledLogitsCollator(collator)


class LabelledLogitsCollator:
    """For `train.logits: labelled`: asks the model for its final hidden states and for no logits
    (an all-False `logits_to_keep`), so the LM head does not run inside the model;
    `LabelledLogitsLoss` runs it on the labelled positions only, a chunk at a time."""

    def __init__(self, collator):
        self.collator = collator

    def __call__(self, features):
        batch = self.collator(features)
        batch["logits_to_keep"] = torch.zeros_like(batch["labels"], dtype=torch.bool)
        batch["output_hidden_states"] = True
        return batch


LOSS_CHUNK_ROWS = 256  # labelled positions per LM-head chunk: 256 x 152k (Qwen3) x 4 B = 156 MB of fp32 logits


class LabelledLogitsLoss:
    """The causal LM loss (sum over labelled next tokens / their count, as transformers' own)
    computed from the final hidden states: the LM head runs only at positions whose next token has
    a label, LOSS_CHUNK_ROWS at a time, each chunk recomputed in the backward pass (activation
    checkpointing), so no [tokens, vocabulary] logits tensor larger than one chunk ever exists."""

    def __init__(self, lm_head):
        self.lm_head = lm_head

    def __call__(self, outputs, labels, num_items_in_batch=None):
        from torch.utils.checkpoint import checkpoint

        hidden = outputs.hidden_states[-1]  # after the final norm: what the LM head reads
        keep = labels[:, 1:] != IGNORE_INDEX
        rows, targets = hidden[:, :-1][keep.to(hidden.device)], labels[:, 1:][keep].to(hidden.device)
        loss = hidden.new_zeros((), dtype=torch.float32)
        for start in range(0, rows.shape[0], LOSS_CHUNK_ROWS):
            chunk = slice(start, start + LOSS_CHUNK_ROWS)
            loss = loss + checkpoint(self._chunk_loss, rows[chunk], targets[chunk], use_reentrant=False)
        return loss / (num_items_in_batch if num_items_in_batch is not None else max(targets.numel(), 1))

    def _chunk_loss(self, rows, targets):
        return torch.nn.functional.cross_entropy(self.lm_head(rows).float(), targets, reduction="sum")


class OneDevicePerProcess(TrainingArguments):
    """TrainingArguments whose process uses one device.

    A single process on a machine with several GPUs gets n_gpu = torch.cuda.device_count() from
    transformers, which multiplies its batch by that count for DataParallel, and the Trainer never
    wraps a 4-bit model in DataParallel: an 8-GPU node would train on 8x the configured batch with
    8x fewer steps. Several GPUs are used by several processes (accelerate launch), one each."""

    @property
    def n_gpu(self) -> int:
        return min(super().n_gpu, 1)


def training_arguments(output_dir: Path, train, compute_dtype: torch.dtype, on_gpu: bool,
                       timeout_minutes: int = DEFAULT_DISTRIBUTED_TIMEOUT_MINUTES):
    """TrainingArguments from the preset's train section. Examples per optimizer step =
    per_device_batch_size x gradient_accumulation_steps x processes (e.g. 8 x 4 x 1 = 32)."""
    return OneDevicePerProcess(
        output_dir=str(output_dir),
        seed=train.seed,
        data_seed=train.seed,
        num_train_epochs=train.epochs,
        learning_rate=train.learning_rate,
        lr_scheduler_type=train.lr_scheduler,
        warmup_steps=train.warmup_ratio,  # a float below 1 is a ratio of the total steps
        per_device_train_batch_size=train.per_device_batch_size,
        gradient_accumulation_steps=train.gradient_accumulation_steps,
        max_grad_norm=train.max_grad_norm,
        bf16=compute_dtype == torch.bfloat16,
        fp16=compute_dtype == torch.float16,
        use_cpu=not on_gpu,
        train_sampling_strategy="group_by_length" if train.group_by_length else "random",
        logging_steps=train.logging_steps,
        save_strategy="steps",
        save_steps=train.save_steps,
        save_total_limit=train.save_total_limit,
        # A padding-free batch has no padding, and its pad id (SmolLM2's <|im_end|>) is also a real token.
        include_num_input_tokens_seen="all" if train.packing == "padding_free" else "non_padding",
        report_to="none",  # TensorBoard is attached explicitly, with our log folder
        ddp_find_unused_parameters=False,
        ddp_timeout=timeout_minutes * 60,  # the same wait as the process group lib/devices.py made
        dataloader_num_workers=0,
    )




def train_adapter(model_path: str, data_path: Path, run_dir: Path, fingerprint: str, *, quantization: str,
                  double_quant: bool, compute_dtype: str, lora_r: int, lora_alpha: int, lora_dropout: float,
                  lora_targets: list[str] | None, train, revision: str | None = None,
                  trust_remote_code: bool = False, stop_after: int | None = None, force: bool = False,
                  timeout_minutes: int = DEFAULT_DISTRIBUTED_TIMEOUT_MINUTES) -> dict | None:
    """Train (or resume) and write run_dir/adapter with training_complete.json last.

    Returns the completion record, or None when stopped early by `stop_after`.
    """
    from torch.utils.tensorboard import SummaryWriter
    from transformers import AutoTokenizer, Trainer
    from transformers.integrations import TensorBoardCallback

    state = process_state(timeout_minutes)
    checkpoints, adapter, staging = run_dir / "checkpoints", run_dir / "adapter", run_dir / ".adapter.partial"
    if state.is_main_process:
        shutil.rmtree(staging, ignore_errors=True)  # a half-saved copy of weights a checkpoint holds
        _set_aside_earlier_training(run_dir, fingerprint, force)
    state.wait_for_everyone()
    resume = last_checkpoint(checkpoints)
    resume_step = checkpoint_step(resume.name) if resume else 0

    # Data and model
    dataset = load_tokenized(data_path)
    with hub_errors(model_path, "model.base", revision):
        tokenizer = AutoTokenizer.from_pretrained(model_path, revision=revision, trust_remote_code=trust_remote_code)
    dtype = resolve_compute_dtype(compute_dtype, state.device)
    model = load_base_for_training(model_path, quantization, double_quant, dtype, train.gradient_checkpointing,
                                   revision, trust_remote_code)
    model, targets = attach_lora(model, lora_r, lora_alpha, lora_dropout, lora_targets)
    if state.is_main_process:
        trainable, total = model.get_nb_trainable_parameters()
        print(f"train: {quantization} base, compute {str(dtype).removeprefix('torch.')}, LoRA r={lora_r} on"
              f" {', '.join(targets)}: {trainable:,} trainable of {total:,} parameters;"
              f" {len(dataset)} examples, {state.num_processes} process(es); {train.packing} batches, logits for"
              f" {'labelled positions only' if train.logits == 'labelled' else 'every position'}")
        if resume:
            print(f"train: resuming from {resume.name}")

    # Train
    callbacks = [JsonlLogCallback(run_dir / "train_log.jsonl", resume_step)]
    if state.is_main_process:
        callbacks.append(TensorBoardCallback(tb_writer=SummaryWriter(log_dir=str(run_dir / "tensorboard"))))
    if stop_after:
        callbacks.append(StopAfterSteps(stop_after))
    collator = make_collator(tokenizer, train.packing, train.logits)
    args = training_arguments(checkpoints, train, dtype, on_gpu=state.device.type == "cuda", timeout_minutes=timeout_minutes)
    trainer = Trainer(model=model, args=args, train_dataset=dataset, data_collator=collator, callbacks=callbacks,
                      compute_loss_func=LabelledLogitsLoss(model.get_output_embeddings()) if train.logits == "labelled"
                      else None)
    if trainer.pop_callback(ProgressCallback):
        trainer.add_callback(BarOnlyProgress)
    output = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    if trainer.state.global_step < trainer.state.max_steps:
        return None

    # Save the adapter, then the sentinel that tells Make and later stages it is complete
    trainer.save_model(str(staging))  # writes on the main process only
    record = {
        "fingerprint": fingerprint,
        "global_step": trainer.state.global_step,
        "epochs": train.epochs,
        "train_loss": output.training_loss,
        "num_processes": state.num_processes,
        # What the Trainer used: its per-process batch x accumulation x processes.
        "global_batch_size": trainer.args.train_batch_size * trainer.args.gradient_accumulation_steps
        * state.num_processes,
        "lora_targets": targets,
        "quantization": quantization,
        "compute_dtype": str(dtype).removeprefix("torch."),
        "resumed_from": resume.name if resume else None,
        "base_model_path": model_path,
    }
    if state.is_main_process:
        (staging / "training_args.bin").unlink(missing_ok=True)  # a pickle; the record below replaces it
        staging.rename(adapter)
        atomic_write_json(adapter / COMPLETE_FILE, record)
    state.wait_for_everyone()
    return record


def _set_aside_earlier_training(run_dir: Path, fingerprint: str, force: bool) -> None:
    """Checkpoints of the same inputs are resumed; anything else trained here (other inputs, or
    --force) moves to superseded/ with its adapter and logs. Trained work is never deleted."""
    checkpoints = run_dir / "checkpoints"
    resumable = not force and made_from(checkpoints, fingerprint)
    # When resuming, an adapter folder can only be an unfinished save (no completion record).
    outputs = [run_dir / "adapter"] if resumable else [run_dir / name for name in TRAINING_OUTPUTS]
    supersede(run_dir, outputs, "train: " + ("an unfinished adapter" if resumable
                                             else "inputs changed (or --force), starting afresh"))
    mark_made_from(checkpoints, fingerprint)


def completed_record(adapter: Path, fingerprint: str) -> dict | None:
    """The completion record of a finished adapter trained on the same inputs, else None."""
    path = adapter / COMPLETE_FILE
    if not path.is_file():
        return None
    record = json.loads(path.read_text(encoding="utf-8"))
    return record if record.get("fingerprint") == fingerprint else None
