"""What a preset needs from outside: its hub models and datasets fetched into the HF cache where
there is internet, and the files a user provides checked, each in one line (stages/download.py).

`download` fetches the base model (at its revision), a hub `refine.model`, GSM8K and a hub
safeguard model into the HF cache (HF_HOME) on a login node, and reads the provided files as the
stages will; the compute node then runs with HF_HUB_OFFLINE=1.
"""

from __future__ import annotations

from pathlib import Path

from lib.errors import InputError
from lib.hub import is_hub_id
from lib.tasks.data import gsm8k_source_kind, load_ailuminate


def needs(config) -> list[tuple[str, str, str | None]]:
    """(kind, name, revision) of everything `config` takes from the hub."""
    items = []
    if is_hub_id(config.model.base):
        items.append(("model.base", config.model.base, config.model.revision))
    if is_hub_id(config.refine.model):
        items.append(("refine.model", config.refine.model, None))
    if is_hub_id(config.safety.safeguard_model):
        items.append(("safety.safeguard_model", config.safety.safeguard_model, None))
    for key in ("gsm8k_train", "gsm8k_test"):
        if gsm8k_source_kind(getattr(config.data, key), f"data.{key}") == "hub":
            items.append((f"data.{key}", getattr(config.data, key), None))
    return items


def check_provided(config) -> list[str]:
    """The files a user provides, read as the stages will read them: one line each."""
    lines = [f"data.ailuminate {config.data.ailuminate}: {len(load_ailuminate(config.data.ailuminate))} prompts"]
    prompt = Path(config.safety.safety_prompt)
    guidelines = prompt.read_text(encoding="utf-8") if prompt.is_file() else ""
    if not guidelines.strip():
        raise InputError(f"safety.safety_prompt {prompt}: missing or empty (the Safety Guidelines prompt you provide)")
    lines.append(f"safety.safety_prompt {prompt}: {len(guidelines)} characters")
    guard = Path(config.safety.safeguard_model)
    if config.safety.safeguard_model.startswith("embedded:"):
        lines.append(f"safety.safeguard_model {guard}: embedded (converted on first use)")
    elif not is_hub_id(config.safety.safeguard_model):
        if not (guard / "config.json").is_file() or not list(guard.glob("*.safetensors")):
            raise InputError(f"safety.safeguard_model {guard}: not a model folder with config.json and *.safetensors")
        lines.append(f"safety.safeguard_model {guard}: a local model folder")
    return lines
