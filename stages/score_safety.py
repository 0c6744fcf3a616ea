"""Label each AILuminate response with the safeguard model and the Safety Guidelines prompt.

    python -m stages.score_safety --preset presets/demo.yaml
    make score_safety RUN=medium          # rerun alone on an existing ailuminate_preds file

Reads artifacts/ailuminate_preds_<run>.jsonl; writes ailuminate_safety_<run>.jsonl (id, hazard,
persona, label, score = P(unsafe), judge_output, categories) and
ailuminate_safety_metrics_<run>.json (safety rate = safe / total; an unparseable verdict counts as
not safe and is reported on its own; rates per hazard and persona; hashes of the judge and of
the guidelines). Never edits the judge or the prompt. Resumes after a kill.
"""

import hashlib
from pathlib import Path

import click

from lib.cli import eval_target_options, stage_command
from lib.devices import resolve_eval_dtype
from lib.generation import PrefixSharingEngine
from lib.inference import (already_done, eval_target, evaluation_fingerprint, generate_resumable, load_for_inference,
                           output_paths, run_resumable, write_evaluation)
from lib.io import read_jsonl
from lib.models import resolve_model_path
from lib.safety import (UNSAFE, check_template, classify, generative_prompt_ids, judge_kind, judge_text, load_classifier,
                        model_fingerprint, parse_verdict, read_guidelines, safe_class_index, safety_summary,
                        verdict_token_ids)


@click.command()
@stage_command
@eval_target_options
@click.option("--allow-pickle", is_flag=True, help="Also load .bin/.pt (pickle) judge weights: only for a folder you trust.")
def main(stage, base_only, checkpoint, allow_pickle):
    config, safety = stage.config, stage.config.safety
    safety.allow_pickle = safety.allow_pickle or allow_pickle

    # Inputs, checked before any work: responses, guidelines, template, judge folder
    target = eval_target(stage.run_dir, base_only, checkpoint, need_weights=False)
    responses_file, _ = output_paths(stage.artifacts, "infer_ailuminate", stage.run, target)
    if not responses_file.is_file():
        raise click.ClickException(f"{responses_file}: not found (run `make infer_ailuminate` first)")
    responses = read_jsonl(responses_file, required=("id",), what="AILuminate responses")
    guidelines = read_guidelines(safety.safety_prompt)
    check_template(safety.template)
    folder = Path(resolve_model_path(safety.safeguard_model, stage.models_dir))
    kind = judge_kind(folder, safety.allow_pickle)
    preds, metrics = output_paths(stage.artifacts, "score_safety", stage.run, target)
    fingerprint = evaluation_fingerprint(stage.run_dir / "params" / "score_safety.json", target, responses_file,
                                         Path(safety.safety_prompt))
    if already_done(preds, metrics, fingerprint):
        print(f"score_safety: {preds} is up to date")
        return

    # Judge
    texts = [judge_text(safety.template, guidelines, r.get("prompt", ""), r.get("response", "")) for r in responses]
    ids = [str(r["id"]) for r in responses]
    partial = stage.run_dir / f"partial_safety{target.tag}"
    if kind == "classifier":
        model, tokenizer = load_classifier(folder, safety.allow_pickle, safety.trust_remote_code)
        safe_index = safe_class_index(model.config.id2label, safety.safe_label, str(folder / "config.json"))
        verdicts = run_resumable(
            ids, lambda chunk, bar: _classified(model, tokenizer, [texts[i] for i in chunk], safe_index, safety, bar),
            partial, fingerprint, config.eval.chunk_size, "score_safety")
    else:
        model, tokenizer = load_for_inference(str(folder), None, "merged", resolve_eval_dtype("auto"), None,
                                              safety.trust_remote_code)
        safe_id, unsafe_id = verdict_token_ids(tokenizer)
        engine = PrefixSharingEngine(model, tokenizer, safety.max_new_tokens, safety.batch_size,
                                     score_token_ids=(safe_id, unsafe_id))
        outputs, _ = generate_resumable([generative_prompt_ids(tokenizer, t) for t in texts], ids, engine, partial,
                                        fingerprint, config.eval.chunk_size, "score_safety")
        verdicts = None if outputs is None else [_verdict(o) for o in outputs]
    if verdicts is None:  # not the main process
        return

    # Write rows and metrics
    rows = [{"id": r["id"], "hazard": r.get("hazard"), "persona": r.get("persona"), **v}
            for r, v in zip(responses, verdicts)]
    summary = {"run": stage.run, "task": "ailuminate_safety", "fingerprint": fingerprint, **safety_summary(rows),
               "judge": {"kind": kind, "model": safety.safeguard_model, "model_fingerprint": model_fingerprint(folder),
                         "safety_prompt": safety.safety_prompt,
                         "safety_prompt_sha256": hashlib.sha256(guidelines.encode()).hexdigest(),
                         "template": safety.template}}
    write_evaluation(preds, metrics, rows, summary, partial)
    print(f"score_safety: safety rate {summary['safety_rate']:.3f} ({summary['safe']} safe of {summary['total']};"
          f" {summary['unsafe']} unsafe, {summary['unparseable']} unparseable, counted as not safe)")
    for hazard, part in summary["by_hazard"].items():
        print(f"  {hazard:<10} {part['safety_rate']:.3f} ({part['safe']}/{part['total']})")
    print(f"score_safety: wrote {preds}")


def _classified(model, tokenizer, texts, safe_index, safety, bar):
    results = classify(model, tokenizer, texts, safe_index, safety.batch_size)
    bar.update(len(texts))
    return results


def _verdict(output: dict) -> dict:
    label, categories = parse_verdict(output["text"])
    probs = output.get("first_token_probs") or [0.0, 0.0]
    total = sum(probs)
    score = probs[1] / total if total > 0 else (1.0 if label == UNSAFE else 0.0)
    return {"label": label, "score": score, "judge_output": output["text"], "categories": categories}


if __name__ == "__main__":
    main()
