"""Write a run's model as it was evaluated to one folder that transformers and vLLM load.

    make export RUN=simple
    python -m stages.export --run simple
    python -m stages.export --run medium --checkpoint checkpoint-400

Loads the adapter onto the base as the `merged` evaluation does (the base quantized to nf4 as in
training, dequantized, the adapter merged at full precision, cast once to eval.dtype) and saves
it to artifacts/run_<run>/merged/ (merged-<checkpoint>/ for a checkpoint): safetensors, config,
tokenizer with its chat template, and the run's model card with the base's licence (written last). An
earlier export of other weights there moves to run_<run>/superseded/; one of the same weights keeps
them and gets the run's current card (after summarize, or a changed threshold).
`AutoModelForCausalLM.from_pretrained` on the folder gives the logits the evaluation computed;
`vllm serve` the folder serves it.
"""

import click

from lib.console import stage_help
from lib.embedded import resolve_model_path
from lib.errors import InputError
from lib.evaluation import eval_target
from lib.pipeline.artifacts import supersede
from lib.pipeline.cli import stage_command
from lib.results.model_card import base_license, hub_base_model


@click.command(help=stage_help(__doc__))
@stage_command
@click.option("--checkpoint", default=None, metavar="NAME",
              help="Export run_<run>/checkpoints/NAME instead of the final adapter.")
def main(stage, checkpoint):
    # The stack (torch, transformers, ...) loads when the command runs, not at import: --help and a
    # wrong option answer at once.
    from lib.devices import use_device
    from lib.engine.generate import evaluated_model
    from lib.results.export import export_fingerprint, export_merged, merged_card, refresh_card

    config = stage.config
    use_device(config.hardware.device, config.model.base, "export",
               config.hardware.distributed_timeout_minutes)
    run = stage.run
    target = eval_target(run, False, checkpoint, base_run=config.eval.adapter == "none")
    if target.adapter is None:
        raise InputError(f"run {run.name!r} evaluates the base model alone (eval.adapter: none): there is no"
                         f" trained model to export; the base is {config.model.base}")
    out = run.merged(checkpoint)
    spec = evaluated_model(config.model, config.eval, config.quant, target.adapter)
    # Before summarize, the adapter's README.md is PEFT's template, not the run's card.
    card = merged_card(target.adapter / "README.md" if run.is_summarized() else None, hub_base_model(config.model.base),
                       base_license(config.model.base, resolve_model_path(config.model.base, stage.models_dir)),
                       run.name)
    if refresh_card(out, export_fingerprint(spec), card):
        print(f"export: {out} holds these weights already; its card is the run's current one")
        return
    supersede(run, [out], "a new export")
    if config.eval.model_format != "merged":
        print(f"export: the run was evaluated as {config.eval.model_format}; this folder is the merged model")
    export_merged(spec, stage.models_dir, out, card)
    print(f"export: {target.adapter} merged into {config.model.base} -> {out}")


if __name__ == "__main__":
    main()
