"""The evaluated model as one folder other tools load: the `merged` weights, tokenizer, chat template, card.

`export_merged` loads the adapter onto the base exactly as the `merged` evaluation does
(lib/models.py: the base quantized to nf4 as in training, dequantized, the adapter merged at full
precision, cast once to the evaluation dtype) and saves that model: safetensors shards, config,
generation config, tokenizer with its chat template, and a card. transformers'
`AutoModelForCausalLM.from_pretrained(folder)` and vLLM (`vllm serve folder`) load it with no
PEFT or bitsandbytes. The folder is written beside its final place and renamed into it, so a
killed export leaves no folder a loader would take for a whole one. An export of the same weights is
not redone: only its card is rewritten (the run's thresholds or summary changed).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from huggingface_hub import ModelCard

from lib.embedded import resolve_model_path
from lib.engine.generate import ModelSpec
from lib.io import atomic_write_json, atomic_write_text, file_sha256, readable_as_umask_allows, write_if_changed
from lib.models import load_for_inference
from lib.pipeline.artifacts import EXPORT_CARD
from lib.pipeline.fingerprints import record_for

MERGED_FORMAT = "merged"


EXPORT_RECORD = "export.json"  # in the export folder: the fingerprint of the weights it holds


def export_fingerprint(spec: ModelSpec) -> str:
    """What the merged weights depend on: the base, how training quantized it, the evaluation dtype and
    the adapter's own weights (not the card: a changed card is rewritten, the weights kept)."""
    settings = {key: str(value) for key, value in vars(spec).items() if key != "adapter"}
    adapter_weights = sorted(Path(spec.adapter).glob("*.safetensors")) if spec.adapter else []
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()
                          + "".join(file_sha256(path) for path in adapter_weights).encode()).hexdigest()


def refresh_card(out: Path, fingerprint: str, card: ModelCard | None) -> bool:
    """Where `out` holds these weights already: its card rewritten where it changed (a threshold, a new
    summary) and True; False when the weights must be exported again."""
    if record_for(out / EXPORT_RECORD, fingerprint) is None or card is None:
        return False
    write_if_changed(out / EXPORT_CARD, str(card))
    (out / EXPORT_CARD).touch()  # current for Make even when unchanged
    return True


def export_merged(spec: ModelSpec, models_dir: Path, out: Path, card: ModelCard | None) -> Path:
    """Save the model `spec` names (a base and an adapter) merged as the evaluation loads it into `out`, with its
    fingerprint (export_fingerprint) and the card last."""
    from lib.devices import resolve_eval_dtype

    dtype = resolve_eval_dtype(spec.dtype)
    base = resolve_model_path(spec.base, models_dir)
    model, tokenizer, _ = load_for_inference(base, spec.adapter, MERGED_FORMAT, dtype, spec.trained,
                                             spec.revision, spec.trust_remote_code)
    # The dequantized model no longer is a 4-bit one: a config that still said so would make loaders
    # quantize it again (or refuse it).
    model.config.quantization_config = None
    if hasattr(model.config, "quantization_config"):
        delattr(model.config, "quantization_config")
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)  # an earlier export killed half-way: never a whole one
    model.save_pretrained(partial, safe_serialization=True, max_shard_size="5GB")
    tokenizer.save_pretrained(partial)
    atomic_write_json(partial / EXPORT_RECORD, {"fingerprint": export_fingerprint(spec)})
    if card is not None:
        atomic_write_text(partial / EXPORT_CARD, str(card))
    readable_as_umask_allows(partial)
    partial.rename(out)
    return out


def merged_card(adapter_card: Path | None, base_hub_id: str | None, license_id: str | None, run: str) -> ModelCard:
    """The export's card: the adapter's as summarize wrote it (the run's results, training, how to
    use it; None before summarize, whose folder holds PEFT's template) with the front matter of a
    full model merged from a base, or a short one."""
    if adapter_card is not None and adapter_card.is_file():
        card = ModelCard.load(adapter_card)
    else:
        card = ModelCard(f"---\n---\n\n# {run}: merged export\n\nThe run was not summarized when it was exported:"
                         f" no results are recorded here (`make summarize RUN={run}`, then `make export RUN={run}`"
                         " again).\n")
    card.data.library_name = "transformers"
    card.data.tags = [tag for tag in (card.data.tags or []) if tag not in ("peft", "lora")] + ["merged"]
    if base_hub_id:
        card.data.base_model = base_hub_id
        card.data.base_model_relation = "merge"
    if license_id:
        card.data.license = license_id
    card.text = ("This folder is the run's adapter merged into its base exactly as the `merged` evaluation"
                 " loaded it (the base quantized to nf4 as in training, dequantized, the adapter merged, cast to"
                 " the evaluation dtype): load it with `AutoModelForCausalLM.from_pretrained` or serve it with"
                 " vLLM, no PEFT needed.\n\n" + card.text)
    return card
