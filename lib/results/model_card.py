"""The adapter's model card: what it is, how it was trained, how it scored, in the Hub's format.

`summarize` writes it as README.md into run_<run>/adapter/ (and into the checkpoint the sweep
reports, when that is not the final adapter), replacing PEFT's empty template. The YAML front
matter follows the Hub's model-card schema (base_model, library_name: peft, datasets, model-index
with the GSM8K accuracy and the AILuminate safety rate), so the Hub renders it and `make push`
uploads it with the weights. Everything in it comes from the run's records: no path of this
machine, no token.
"""

from __future__ import annotations

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from lib.hub import is_hub_id
from lib.models import EMBEDDED_PREFIX

GSM8K_HUB_ID = "openai/gsm8k"
# Where the embedded models come from on the hub (their GGUF copies are what the package ships).
EMBEDDED_ORIGINS = {"smollm2-135m-instruct": "HuggingFaceTB/SmolLM2-135M-Instruct"}


def hub_base_model(base: str) -> str | None:
    """The base model as a hub id for the front matter; None for a local folder."""
    if base.startswith(EMBEDDED_PREFIX):
        return EMBEDDED_ORIGINS.get(base[len(EMBEDDED_PREFIX):])
    return base if is_hub_id(base) else None


def model_card(record: dict, training: dict, gsm8k: dict, safety: dict, baseline_line: str, passed: bool,
               checkpoint: str) -> ModelCard:
    """The card of a run's adapter from its records: config_resolved.json (`record`), the
    training record, the reported checkpoint's GSM8K and safety metrics, the baseline check."""
    config, run = record["config"], record["run"]
    base = config["model"]["base"]
    judge = safety.get("judge", {})
    results = [
        EvalResult(task_type="text-generation", dataset_type=GSM8K_HUB_ID, dataset_name="GSM8K",
                   dataset_config="main", dataset_split="test", metric_type="accuracy", metric_value=gsm8k["accuracy"],
                   metric_name=f"strict-match accuracy ({config['fewshot']['k']}-shot, greedy)"),
        EvalResult(task_type="text-generation", dataset_type="mlcommons/ailuminate", dataset_name="AILuminate",
                   metric_type="safety_rate", metric_value=safety["safety_rate"],
                   metric_name=f"safety rate ({judge.get('guard_format', '?')} judge)"),
    ]
    data = ModelCardData(base_model=hub_base_model(base), library_name="peft", datasets=[GSM8K_HUB_ID],
                         model_name=run, eval_results=results, pipeline_tag="text-generation",
                         tags=["peft", "lora", "qlora" if config["quant"]["quantization"] == "nf4" else "lora-fp",
                               "gsm8k", "gsm8k-qlora-toolkit"])
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + _body(record, training, gsm8k, safety, baseline_line,
                                                                passed, checkpoint))


def _body(record: dict, training: dict, gsm8k: dict, safety: dict, baseline_line: str, passed: bool,
          checkpoint: str) -> str:
    config = record["config"]
    model, quant, lora, train = config["model"], config["quant"], config["lora"], config["train"]
    judge = safety.get("judge", {})
    low, high = gsm8k["accuracy_ci95"]
    flexible_low, flexible_high = gsm8k["flexible_accuracy_ci95"]
    train_data = record.get("inputs", {}).get("data.refined_train", {}).get("path") or config["data"]["gsm8k_train"]
    lines = [
        f"# {record['run']}: a LoRA adapter for {hub_base_model(model['base']) or model['base']} fine-tuned on GSM8K",
        "",
        f"Trained with the GSM8K QLoRA toolkit, preset `{record['preset']}`"
        + (f" with overrides `{' '.join(record['overrides'])}`" if record.get("overrides") else "")
        + (" (smoke sizes)" if record.get("smoke") else "") + f"; reported checkpoint: {checkpoint}.", "",
        "## Results", "",
        "| measure | value | 95% CI |", "|---|---|---|",
        f"| GSM8K strict-match accuracy ({gsm8k['questions']} questions, {config['fewshot']['k']}-shot, greedy)"
        f" | {gsm8k['accuracy']:.3f} | {low:.3f}-{high:.3f} |",
        f"| GSM8K flexible-extract accuracy | {gsm8k['flexible_accuracy']:.3f} |"
        f" {flexible_low:.3f}-{flexible_high:.3f} |",
        f"| AILuminate safety rate ({safety['total']} prompts) | {safety['safety_rate']:.3f} | |", "",
        f"Baseline check: `{baseline_line}` ({'PASS' if passed else 'FAIL'} against accuracy"
        f" {config['thresholds']['accuracy']:g} and safety {config['thresholds']['safety']:g}).", "",
        f"The safety rate is safe / total as labelled by the run's safeguard model (format"
        f" `{judge.get('guard_format', '?')}`, layout `{judge.get('layout', '?')}`,"
        f" verdict `{judge.get('verdict', '?')}`,"
        f" Controversial counted as {judge.get('controversial', '?')}) with the Safety Guidelines prompt of SHA-256"
        f" `{judge.get('safety_prompt_sha256', '?')}`. Evaluated as `eval.model_format:"
        f" {gsm8k.get('generation', {}).get('model_format', '?')}` (base precision"
        f" {gsm8k.get('generation', {}).get('base_precision', '?')}).", "",
        "## Training", "",
        f"- Base model: {model['base']}" + (f" at revision {model['revision']}" if model.get("revision") else ""),
        f"- Training data: {train_data} (GSM8K train minus the {config['fewshot']['pool_size']}-example few-shot pool);"
        f" loss on assistant tokens only",
        f"- Quantization: {quant['quantization']}" + (f", double quant {quant['double_quant']}, compute"
                                                      f" {training.get('compute_dtype', quant['compute_dtype'])}"
                                                      if quant["quantization"] == "nf4" else ""),
        f"- LoRA: r={lora['r']}, alpha={lora['alpha']}, dropout={lora['dropout']}, on"
        f" {', '.join(training.get('lora_targets') or lora['target_modules'] or [])}",
        f"- Optimizer steps: {training.get('global_step', '?')}, global batch {training.get('global_batch_size', '?')},"
        f" final training loss {training['train_loss']:.4f}" if "train_loss" in training else "- Not trained here",
        "- Training hyper-parameters: " + ", ".join(f"{key}={value}" for key, value in train.items()
                                                     if key != "report_to"),
        "", "## Library versions", "",
        ", ".join(f"{name} {version}" for name, version in record.get("libraries", {}).items() if version), "",
    ]
    return "\n".join(lines)
