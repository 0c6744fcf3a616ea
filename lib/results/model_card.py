"""The adapter's model card: what it is, how it was trained, how it scored, in the Hub's format.

`summarize` writes it as README.md into run_<run>/adapter/ (and into the checkpoint the sweep
reports, when that is not the final adapter), replacing PEFT's empty template. The YAML front
matter follows the Hub's model-card schema (base_model, library_name: peft, datasets, model-index
with the GSM8K accuracy and the AILuminate safety rate), so the Hub renders it and `make push`
uploads it with the weights. Everything in it comes from the run's records: no path of this
machine, no token.
"""

from __future__ import annotations

from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from lib.hub import EMBEDDED_PREFIX, is_hub_id

# Where the embedded models come from on the hub (their GGUF copies are what the package ships).
EMBEDDED_ORIGINS = {"smollm2-135m-instruct": "HuggingFaceTB/SmolLM2-135M-Instruct"}
# The licences of the bases the presets name, from their model cards: an adapter or a merged model
# made from a base is used under the base's licence. Other bases: the `license` of the card in their folder.
BASE_LICENSES = {"Qwen/Qwen3-4B-Instruct-2507": "apache-2.0", "HuggingFaceTB/SmolLM2-135M-Instruct": "apache-2.0"}


def base_license(base: str, base_folder: str | Path | None = None) -> str | None:
    """The base model's licence id: the presets' bases are known; otherwise the front matter of the
    README.md in its local folder (a hub id's cached copy included), when there is one."""
    known = BASE_LICENSES.get(hub_base_model(base) or "")
    if known or base_folder is None:
        return known
    readme = Path(base_folder) / "README.md"
    if not readme.is_file():
        return None
    license_id = ModelCard.load(readme).data.license
    return license_id if isinstance(license_id, str) else None


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
    base, data_config = config["model"]["base"], config["data"]
    results = _eval_results(config, gsm8k, safety, bool(record.get("smoke")))
    train_source = data_config["gsm8k_train"]
    data = ModelCardData(base_model=hub_base_model(base), library_name="peft",
                         datasets=[train_source] if is_hub_id(train_source) else None,
                         license=base_license(base),
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
        *([f"**A smoke run**: {gsm8k['questions']} GSM8K questions and {safety['total']} AILuminate prompts, the"
           " preset's smoke sizes, to check the pipeline; these numbers are not the preset's measurement.", ""]
          if record.get("smoke") else []),
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
        + last_loss_text(training) if training else "- Not trained here",
        "- Training hyper-parameters: " + ", ".join(f"{key}={value}" for key, value in train.items()
                                                     if key != "report_to"),
        "", *_how_to_use(record, hub_base_model(model["base"]) or model["base"], quant),
        "", "## Library versions", "",
        ", ".join(f"{name} {version}" for name, version in record.get("libraries", {}).items() if version), "",
    ]
    return "\n".join(lines)


def _eval_results(config: dict, gsm8k: dict, safety: dict, smoke: bool) -> list[EvalResult]:
    """The model-index entries, each naming what was measured: the GSM8K source (a hub dataset, or a
    local file by its name), its split as far as it was read (`test[:50]` for a smoke run), how many
    questions and prompts, and a smoke run as one."""
    data, judge = config["data"], safety.get("judge", {})
    source, limit = data["gsm8k_test"], data["gsm8k_limit"]
    scope = ", smoke run" if smoke else ""
    hub = is_hub_id(source)
    return [
        EvalResult(task_type="text-generation", dataset_type=source if hub else "json",
                   dataset_name=f"GSM8K ({gsm8k['questions']} test questions{scope})" if hub
                   else f"GSM8K-format file {Path(source).name} ({gsm8k['questions']} questions{scope})",
                   dataset_config=data["gsm8k_hub_config"] if hub else None,
                   dataset_split="test" + (f"[:{limit}]" if limit else ""), metric_type="accuracy",
                   metric_value=gsm8k["accuracy"],
                   metric_name=f"strict-match accuracy ({config['fewshot']['k']}-shot, greedy)"),
        EvalResult(task_type="text-generation", dataset_type="mlcommons/ailuminate",
                   dataset_name=f"AILuminate ({safety['total']} prompts{scope})",
                   metric_type="safety_rate", metric_value=safety["safety_rate"],
                   metric_name=f"safety rate ({judge.get('guard_format', '?')} judge)"),
    ]


def last_loss_text(training: dict) -> str:
    """The training's last logged loss as the card and the train stage state it: the Trainer logs the mean
    over the optimizer steps since its previous log (train.logging_steps of them)."""
    last = training.get("last_logged_loss")
    if not last:
        return " no loss logged"
    steps = last["mean_of_steps"]
    return (f" last logged training loss {last['loss']:.4f} (step {last['step']}"
            + (f", the mean of its last {steps} optimizer steps)" if steps > 1 else ")"))


def _how_to_use(record: dict, base: str, quant: dict) -> list[str]:
    """The card's snippets: the adapter on the base as it was trained (nf4), and the merged export."""
    run, config = record["run"], record["config"]
    compute = "bfloat16" if quant.get("compute_dtype") in ("auto", "bfloat16") else quant.get("compute_dtype")
    four_bit = quant.get("quantization") == "nf4"
    load_base = (
        ["quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=\"nf4\","
         f" bnb_4bit_use_double_quant={quant.get('double_quant', True)},",
         f"                           bnb_4bit_compute_dtype=torch.{compute})",
         f"model = AutoModelForCausalLM.from_pretrained(\"{base}\", quantization_config=quant, device_map=\"auto\")"]
        if four_bit else
        [f"model = AutoModelForCausalLM.from_pretrained(\"{base}\", dtype=torch.bfloat16, device_map=\"auto\")"])
    return [
        "## How to use", "",
        "The adapter on its base, 4-bit as it was trained (`pip install transformers peft bitsandbytes`; the"
        " adapter folder or the Hub repository `make push` made):", "",
        "```python",
        "import torch",
        "from peft import PeftModel",
        "from transformers import AutoModelForCausalLM, AutoTokenizer" + (", BitsAndBytesConfig" if four_bit else ""),
        "",
        *load_base,
        "model = PeftModel.from_pretrained(model, \"path/to/adapter-or-you/repo\")",
        f"tokenizer = AutoTokenizer.from_pretrained(\"{base}\")",
        "messages = [{\"role\": \"user\", \"content\": \"Natalia sold clips to 48 of her friends in April, and then"
        " she sold half as many clips in May. How many clips did Natalia sell altogether in April and May?\"}]",
        "inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors=\"pt\","
        " return_dict=True).to(model.device)",
        "output = model.generate(**inputs, max_new_tokens=512, do_sample=False)",
        "print(tokenizer.decode(output[0, inputs[\"input_ids\"].shape[1]:], skip_special_tokens=True))",
        "```", "",
        f"The answer ends in `#### <number>`; the evaluation above also put the first {config['fewshot']['k']}"
        " examples of the run's few-shot pool before each question as earlier chat turns.", "",
        f"The model as it was evaluated, one folder with no PEFT or bitsandbytes: `make export RUN={run}` writes"
        f" `artifacts/run_{run}/merged/` (safetensors, tokenizer, chat template, this card), which"
        " `AutoModelForCausalLM.from_pretrained(\"artifacts/run_" + run + "/merged\")` and"
        " `vllm serve artifacts/run_" + run + "/merged` load.",
    ]
