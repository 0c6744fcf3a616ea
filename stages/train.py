"""Fine-tune a LoRA adapter on the tokenized data with QLoRA (4-bit nf4 base) and the HF Trainer.

    python -m stages.train --preset presets/demo.yaml
    make train PRESET=simple
    make train PRESET=simple NPROC=2    # accelerate launch --multi_gpu --num_processes 2
    accelerate launch --config_file presets/accelerate/multi_gpu.yaml --num_processes 4 \
        -m stages.train --preset presets/simple.yaml

Writes artifacts/run_<run>/checkpoints/checkpoint-<step>/, train_log.jsonl, tensorboard/ (and the
trackers of train.report_to, e.g. wandb), and the final PEFT adapter in artifacts/run_<run>/adapter/
(training_complete.json written last). A rerun resumes from the last checkpoint; a finished adapter
for the same inputs is not retrained.
"""

import json

import click

from lib.console import stage_help
from lib.embedded import resolve_model_path
from lib.pipeline.cli import stage_command
from lib.pipeline.fingerprints import mark_current
from lib.results.model_card import last_loss_text
from lib.training.tracking import Tracking


@click.command(help=stage_help(__doc__))
@stage_command
@click.option("--stop-after", type=int, default=None, metavar="STEPS",
              help="Save a checkpoint and stop after this many optimizer steps; rerun to resume.")
@click.option("--force", is_flag=True, help="Retrain even when a finished adapter for the same inputs exists.")
def main(stage, stop_after, force):
    # The stack (torch, transformers, ...) loads when the command runs, not at import: --help and a
    # wrong option answer at once.
    from transformers import set_seed

    from lib.devices import process_state, use_device
    from lib.training.trainer import TrainingSetup, finished_training, train_adapter, training_fingerprint

    config, run = stage.config, stage.run
    use_device(config.hardware.device, config.model.base, "train",
               config.hardware.distributed_timeout_minutes)
    set_seed(config.train.seed)
    if config.eval.adapter == "none":
        raise click.ClickException(f"run {run.name!r} evaluates the base model (eval.adapter: none):"
                                   " it trains nothing")

    # Where the curves go, checked before any work (a tracker that is not installed stops here)
    tracking = Tracking.checked(run.name, config.train.report_to, json.loads(run.record.read_text(encoding="utf-8")))

    # What the adapter depends on: the training keys and the tokenized data
    if not run.tokenized.is_file():
        raise click.ClickException(f"{run.tokenized}: not found (run `make tokenize RUN={run.name}` first)")
    fingerprint = training_fingerprint(
        {"model": config.model, "quant": config.quant, "lora": config.lora, "train": config.train}, run.tokenized)
    done = finished_training(run.adapter, fingerprint)
    if done and not force:  # same inputs, e.g. the tokenized file was rewritten identically
        print(f"train: {run.adapter} is already trained on these inputs (step {done['global_step']});"
              " --force retrains")
        mark_current(run.training_complete)
        return

    setup = TrainingSetup(config.model, resolve_model_path(config.model.base, stage.models_dir), config.quant,
                          config.lora, config.train, config.hardware.distributed_timeout_minutes)
    record = train_adapter(setup, run, fingerprint, stop_after=stop_after, force=force, tracking=tracking)
    if not process_state().is_main_process:
        return
    if record is None:
        print(f"train: stopped after {stop_after} steps as asked; rerun to resume from the last checkpoint")
    else:
        print(f"train: adapter written to {run.adapter} after {record['global_step']} steps,"
              f"{last_loss_text(record)}, global batch {record['global_batch_size']}")


if __name__ == "__main__":
    main()
