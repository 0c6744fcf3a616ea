import json

import pytest
import torch

from lib.errors import InputError
from lib.models import embedded_gguf_path, resolve_model_path


def test_embedded_gguf_is_found_through_package_metadata():
    path = embedded_gguf_path("smollm2-135m-instruct")
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.is_file()


def test_embedded_model_converts_to_safetensors_once(models_dir, smollm2_dir):
    files = {p.name for p in smollm2_dir.iterdir()}
    assert "model.safetensors" in files and not any(name.endswith(".bin") for name in files)
    config = json.loads((smollm2_dir / "config.json").read_text())
    assert "quantization_config" not in config  # the GGUF record would block BitsAndBytesConfig
    before = (smollm2_dir / "model.safetensors").stat().st_mtime_ns
    assert resolve_model_path("embedded:smollm2-135m-instruct", models_dir) == str(smollm2_dir)
    assert (smollm2_dir / "model.safetensors").stat().st_mtime_ns == before


def test_converted_model_generates_and_loads_in_4bit(smollm2_dir, smollm2_tokenizer):
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    model = AutoModelForCausalLM.from_pretrained(smollm2_dir)
    prompt = smollm2_tokenizer.apply_chat_template([{"role": "user", "content": "Say hello."}],
                                                   add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model.generate(**prompt, max_new_tokens=8, do_sample=False)
    assert smollm2_tokenizer.decode(out[0, prompt["input_ids"].shape[1]:]).strip()

    nf4 = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                             bnb_4bit_compute_dtype=torch.float32)
    quantized = AutoModelForCausalLM.from_pretrained(smollm2_dir, quantization_config=nf4, device_map={"": "cpu"})
    assert type(quantized.model.layers[0].self_attn.q_proj).__name__ == "Linear4bit"


def test_hub_ids_and_local_folders_pass_through(tmp_path):
    assert resolve_model_path("Qwen/Qwen3-4B-Instruct-2507", tmp_path) == "Qwen/Qwen3-4B-Instruct-2507"
    assert resolve_model_path(str(tmp_path), tmp_path / "models") == str(tmp_path)


def test_unknown_embedded_name_is_refused(tmp_path):
    with pytest.raises(InputError, match="unknown embedded model"):
        resolve_model_path("embedded:llama-900b", tmp_path)
