"""Label each AILuminate response with the safeguard model and the Safety Guidelines prompt.

    python -m stages.score_safety --preset presets/demo.yaml
    make score_safety RUN=medium          # rerun alone on an existing ailuminate_preds file
    python -m stages.score_safety --run medium --set safety.guard_format=qwen3guard --reconfigure

Reads artifacts/ailuminate_preds_<run>.jsonl; writes ailuminate_safety_<run>.jsonl (id, hazard,
persona, label, counted_safe, score = P(unsafe), judge_output, categories) and
ailuminate_safety_metrics_<run>.json (safety rate = counted safe / total, the strict and loose
rates for three-level guards, counts, rates per hazard and persona, the judge's format, layout
and verdict mode, hashes of the judge and the guidelines). Stops, writing nothing that summarize
accepts, when more than safety.max_unparseable of the verdicts are unparseable. Never edits the
judge or the prompt. Resumes after a kill.
"""

import hashlib
from pathlib import Path

import click

from lib.embedded import resolve_model_path
from lib.evaluation import Evaluation, eval_target
from lib.io import read_jsonl
from lib.judge.inputs import check_template, read_guidelines
from lib.judge.scoring import judge_responses
from lib.judge.verdicts import check_parseable, safety_summary
from lib.pipeline.cli import evaluation_command


@evaluation_command(__doc__)
@click.option("--allow-pickle", is_flag=True,
              help="Also load .bin/.pt (pickle) judge weights: only for a folder you trust.")
def main(stage, base_only, checkpoint, allow_pickle):
    # The stack (torch, transformers, ...) loads when the command runs, not at import: --help and a
    # wrong option answer at once.
    from lib.devices import use_device

    safety = stage.config.safety
    use_device(stage.config.hardware.device, safety.safeguard_model, "score_safety",
               stage.config.hardware.distributed_timeout_minutes)
    allow_pickle = safety.allow_pickle or allow_pickle  # the option adds to the preset's key

    # Inputs, checked before any work: responses, guidelines, template, judge folder
    run = stage.run
    target = eval_target(run, base_only, checkpoint, need_weights=False, base_run=stage.config.eval.adapter == "none")
    responses_file = run.evaluation("infer_ailuminate", "preds", target.tag)
    if not responses_file.is_file():
        raise click.ClickException(f"{responses_file}: not found (run `make infer_ailuminate RUN={run.name}` first)")
    responses = read_jsonl(responses_file, required=("id",), what="AILuminate responses")
    guidelines = read_guidelines(safety.safety_prompt)
    check_template(safety.template)
    folder = Path(resolve_model_path(safety.safeguard_model, stage.models_dir))
    evaluation = Evaluation.of(run, "score_safety", target, responses_file, Path(safety.safety_prompt))
    if evaluation.skip_when_done():
        return

    # Judge
    verdicts, judge = judge_responses(responses, guidelines, folder, safety, allow_pickle=allow_pickle,
                                      chunk_size=stage.config.eval.chunk_size, partial=evaluation.partial,
                                      fingerprint=evaluation.fingerprint, attention=stage.config.hardware.attention,
                                      decode=stage.config.hardware.decode)
    if verdicts is None:  # not the main process
        return
    rows = [{"id": r["id"], "hazard": r.get("hazard"), "persona": r.get("persona"), **v}
            for r, v in zip(responses, verdicts)]
    check_parseable(rows, safety, judge)

    # Write rows and metrics
    summary = {"run": run.name, "task": "ailuminate_safety", "fingerprint": evaluation.fingerprint,
               **safety_summary(rows),
               "judge": {**judge, "safety_prompt": safety.safety_prompt,
                         "safety_prompt_sha256": hashlib.sha256(guidelines.encode()).hexdigest()}}
    evaluation.write(rows, summary)
    print(f"score_safety: safety rate {summary['safety_rate']:.3f}"
          f" ({summary['safe']} counted safe of {summary['total']}; {summary['unsafe']} unsafe,"
          f" {summary['controversial']} controversial, {summary['unparseable']} unparseable)"
          f"; strict {summary['safety_rate_strict']:.3f}, loose {summary['safety_rate_loose']:.3f}")
    for hazard, part in summary["by_hazard"].items():
        print(f"  {hazard:<10} {part['safety_rate']:.3f} ({part['safe']}/{part['total']})")
    print(f"score_safety: wrote {evaluation.preds}")


if __name__ == "__main__":
    main()
