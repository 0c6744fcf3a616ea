"""QLoRA fine-tuning with transformers' Trainer: LoRA, batches, loss, logging, resume.

The base comes from lib/models.py (4-bit nf4 through bitsandbytes, also on CPU, unless
`quantization: none`; prepared with peft's `prepare_model_for_kbit_training`) and is wrapped with
LoRA on the projections found in it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import TrainingArguments
from transformers.trainer_callback import ProgressCallback

from lib.devices import DEFAULT_DISTRIBUTED_TIMEOUT_MINUTES, process_state, resolve_compute_dtype
from lib.errors import InputError
from lib.hub import hub_errors
from lib.io import atomic_write_json, file_sha256, read_jsonl, readable_as_umask_allows
from lib.models import load_base_for_training
from lib.pipeline.artifacts import CHECKPOINT_PREFIX, COMPLETE_FILE, RunPaths, checkpoint_step, supersede
from lib.pipeline.config import LoraConfig, ModelConfig, QuantConfig, TrainConfig, without_runtime_keys
from lib.pipeline.fingerprints import current_record, made_from, mark_made_from
from lib.training.callbacks import BarOnlyProgress, JsonlLogCallback, ReadableCheckpoints, StopAfterSteps
from lib.training.loss import LabelledLogitsLoss, make_collator
from lib.training.packed_attention import packed_kernel, set_training_attention
from lib.training.tracking import Tracking, attach_run_config

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


class OneDevicePerProcess(TrainingArguments):
    """TrainingArguments whose process uses one device.

    A single process on a machine with several GPUs gets n_gpu = torch.cuda.device_count() from
    transformers, which multiplies its batch by that count for DataParallel, and the Trainer never
    wraps a 4-bit model in DataParallel: an 8-GPU node would train on 8x the configured batch with
    8x fewer steps. Several GPUs are used by several processes (accelerate launch), one each."""

    @property
    def n_gpu(self) -> int:
        return min(super().n_gpu, 1)


# TrainingArguments from the train section: each argument and the train key it takes. The rest of the
# arguments (below) follow from the compute dtype, the device and the launch, or are fixed.
TRAINING_ARGUMENTS = {
    "seed": "seed", "data_seed": "seed", "num_train_epochs": "epochs", "learning_rate": "learning_rate",
    "lr_scheduler_type": "lr_scheduler",
    "warmup_steps": "warmup_ratio",  # a float below 1 is a ratio of the total steps
    "per_device_train_batch_size": "per_device_batch_size",
    "gradient_accumulation_steps": "gradient_accumulation_steps", "max_grad_norm": "max_grad_norm",
    "logging_steps": "logging_steps", "save_steps": "save_steps", "save_total_limit": "save_total_limit",
}


def training_arguments(output_dir: Path, train: TrainConfig, compute_dtype: torch.dtype, on_gpu: bool,
                       timeout_minutes: int = DEFAULT_DISTRIBUTED_TIMEOUT_MINUTES, trackers: tuple[str, ...] = (),
                       run_name: str | None = None):
    """TrainingArguments from the preset's train section (TRAINING_ARGUMENTS). Examples per optimizer
    step = per_device_batch_size x gradient_accumulation_steps x processes (e.g. 8 x 4 x 1 = 32)."""
    return OneDevicePerProcess(
        output_dir=str(output_dir),
        **{argument: getattr(train, key) for argument, key in TRAINING_ARGUMENTS.items()},
        bf16=compute_dtype == torch.bfloat16,
        fp16=compute_dtype == torch.float16,
        use_cpu=not on_gpu,
        train_sampling_strategy="group_by_length" if train.group_by_length else "random",
        save_strategy="steps",
        # A padding-free batch has no padding, and its pad id (SmolLM2's <|im_end|>) is also a real token.
        include_num_input_tokens_seen="all" if train.packing == "padding_free" else "non_padding",
        # The integrations besides TensorBoard, which is attached with our log folder (_callbacks).
        report_to=list(trackers) or "none",
        run_name=run_name,
        ddp_find_unused_parameters=False,
        ddp_timeout=timeout_minutes * 60,  # the same wait as the process group lib/devices.py made
        dataloader_num_workers=0,
    )


@dataclass(frozen=True)
class TrainingSetup:
    """What a training run is made of, section by section, as the train stage hands them over."""

    model: ModelConfig
    model_path: str  # model.base resolved (an embedded model's converted folder)
    quant: QuantConfig
    lora: LoraConfig
    train: TrainConfig
    timeout_minutes: int = DEFAULT_DISTRIBUTED_TIMEOUT_MINUTES  # hardware.distributed_timeout_minutes


def train_adapter(setup: TrainingSetup, run: RunPaths, fingerprint: str, *, stop_after: int | None = None,
                  force: bool = False, tracking: Tracking | None = None) -> dict | None:
    """Train (or resume) on the run's tokenized data and write its adapter with training_complete.json
    last; the curves go where `tracking` says (default: TensorBoard in the run folder). Returns the
    completion record, or None when stopped early by `stop_after`."""
    from transformers import Trainer

    state = process_state(setup.timeout_minutes)
    if state.is_main_process:
        shutil.rmtree(run.adapter_staging, ignore_errors=True)  # a half-saved copy of weights a checkpoint holds
        _set_aside_earlier_training(run, fingerprint, force)
    state.wait_for_everyone()
    resume = last_checkpoint(run.checkpoints)

    dataset = load_tokenized(run.tokenized)
    tokenizer, model, dtype, attention = _setup_model(setup, state.device)
    model, targets = attach_lora(model, setup.lora.r, setup.lora.alpha, setup.lora.dropout, setup.lora.target_modules)
    if state.is_main_process:
        print(_setup_line(setup, model, targets, dtype, attention, len(dataset), state.num_processes, resume))

    tracking = tracking or Tracking(run.name, tensorboard=True, trackers=(), run_config={})
    if tracking.run_config:
        attach_run_config(model, tracking.run_name, tracking.run_config)
    args = training_arguments(run.checkpoints, setup.train, dtype, on_gpu=state.device.type == "cuda",
                              timeout_minutes=setup.timeout_minutes, trackers=tracking.trackers,
                              run_name=tracking.run_name)
    labelled = setup.train.logits == "labelled"
    trainer = Trainer(model=model, args=args, train_dataset=dataset,
                      data_collator=make_collator(tokenizer, setup.train.packing, setup.train.logits),
                      callbacks=_callbacks(run, resume, stop_after, state.is_main_process and tracking.tensorboard),
                      compute_loss_func=LabelledLogitsLoss(model.get_output_embeddings(), dtype) if labelled else None)
    if trainer.pop_callback(ProgressCallback):
        trainer.add_callback(BarOnlyProgress)
    output = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    if trainer.state.global_step < trainer.state.max_steps:
        return None

    record = {
        "fingerprint": fingerprint, "global_step": trainer.state.global_step, "epochs": setup.train.epochs,
        # The Trainer's training_loss is the mean since this process started (a resumed run's last
        # few steps); the card states the last logged loss and what it averages.
        "train_loss_since_start": output.training_loss, "last_logged_loss": last_logged_loss(run.train_log),
        "num_processes": state.num_processes,
        # What the Trainer used: its per-process batch x accumulation x processes.
        "global_batch_size": trainer.args.train_batch_size * trainer.args.gradient_accumulation_steps
        * state.num_processes,
        "lora_targets": targets, "quantization": setup.quant.quantization,
        "compute_dtype": str(dtype).removeprefix("torch."), "resumed_from": resume.name if resume else None,
        "base_model_path": setup.model_path,
    }
    _save_adapter(trainer, run.adapter_staging, run.adapter, record, state)
    return record


def _setup_model(setup: TrainingSetup, device: torch.device):
    """(tokenizer, the base as QLoRA trains it with the attention packed rows need, compute dtype,
    the attention it runs with)."""
    from transformers import AutoTokenizer

    model, quant = setup.model, setup.quant
    with hub_errors(setup.model_path, "model.base", model.revision):
        tokenizer = AutoTokenizer.from_pretrained(setup.model_path, revision=model.revision,
                                                  trust_remote_code=model.trust_remote_code)
    dtype = resolve_compute_dtype(quant.compute_dtype, device)
    base = load_base_for_training(setup.model_path, quant.quantization, quant.double_quant, dtype,
                                  setup.train.gradient_checkpointing, model.revision, model.trust_remote_code,
                                  quant.quant_storage)
    attention = set_training_attention(base, setup.train.packing, device)
    if setup.train.packing == "padding_free":
        attention += f": {packed_kernel(device, dtype)}"
    return tokenizer, base, dtype, attention


def _setup_line(setup: TrainingSetup, model, targets: list[str], dtype: torch.dtype, attention: str, examples: int,
                processes: int, resume: Path | None) -> str:
    trainable, total = model.get_nb_trainable_parameters()
    train = setup.train
    return (f"train: {setup.quant.quantization} base, compute {str(dtype).removeprefix('torch.')}, LoRA"
            f" r={setup.lora.r} on {', '.join(targets)}: {trainable:,} trainable of {total:,} parameters; {examples}"
            f" examples, {processes} process(es); {train.packing} batches ({attention} attention), logits for"
            f" {'labelled positions only' if train.logits == 'labelled' else 'every position'}"
            + (f"; resuming from {resume.name}" if resume else ""))


def last_logged_loss(train_log: Path) -> dict | None:
    """{step, loss, mean_of_steps} of the last loss in train_log.jsonl: the Trainer logs the mean over
    the optimizer steps since its previous log (train.logging_steps of them, or fewer at a resume)."""
    if not train_log.is_file():
        return None
    steps = [json.loads(line) for line in train_log.read_text(encoding="utf-8").splitlines() if line.strip()]
    losses = [entry for entry in steps if "loss" in entry]
    if not losses:
        return None
    previous = losses[-2]["step"] if len(losses) > 1 else 0
    return {"step": losses[-1]["step"], "loss": losses[-1]["loss"], "mean_of_steps": losses[-1]["step"] - previous}


def _callbacks(run: RunPaths, resume: Path | None, stop_after: int | None, tensorboard: bool) -> list:
    """The JSONL log (every process: it writes on the main one), TensorBoard (asked for, on the main
    process), the stop."""
    from torch.utils.tensorboard import SummaryWriter
    from transformers.integrations import TensorBoardCallback

    callbacks = [JsonlLogCallback(run.train_log, checkpoint_step(resume.name) if resume else 0), ReadableCheckpoints()]
    if tensorboard:
        callbacks.append(TensorBoardCallback(tb_writer=SummaryWriter(log_dir=str(run.tensorboard))))
    if stop_after:
        callbacks.append(StopAfterSteps(stop_after))
    return callbacks


def _save_adapter(trainer, staging: Path, adapter: Path, record: dict, state) -> None:
    """The adapter saved beside its final place, moved there, then the record that tells Make and
    later stages it is complete."""
    trainer.save_model(str(staging))  # writes on the main process only
    if state.is_main_process:
        (staging / "training_args.bin").unlink(missing_ok=True)  # a pickle; the record replaces it
        readable_as_umask_allows(staging)
        staging.rename(adapter)
        atomic_write_json(adapter / COMPLETE_FILE, record)
    state.wait_for_everyone()


def _set_aside_earlier_training(run: RunPaths, fingerprint: str, force: bool) -> None:
    """Checkpoints of the same inputs are resumed; anything else trained here (other inputs, or
    --force) moves to superseded/ with its adapter and logs. Trained work is never deleted."""
    resumable = not force and made_from(run.checkpoints, fingerprint)
    # When resuming, an adapter folder can only be an unfinished save (no completion record).
    outputs = [run.adapter] if resumable else run.training_outputs
    supersede(run, outputs, "train: " + ("an unfinished adapter" if resumable
                                                else "inputs changed (or --force), starting afresh"))
    mark_made_from(run.checkpoints, fingerprint)


def training_fingerprint(sections: dict, data_path: Path) -> str:
    """What an adapter depends on: the training sections' values ({name: dataclass}) and the
    tokenized data, without the runtime keys (where the curves go changes no weight). The formula
    is kept as it was, so finished adapters stay current."""
    values = json.dumps(without_runtime_keys({name: vars(section) for name, section in sections.items()}),
                        sort_keys=True)
    return hashlib.sha256(values.encode() + file_sha256(data_path).encode()).hexdigest()


def finished_training(adapter: Path, fingerprint: str) -> dict | None:
    """The completion record of a finished adapter trained on these inputs, else None (a query)."""
    return current_record(adapter / COMPLETE_FILE, adapter / COMPLETE_FILE, fingerprint)
