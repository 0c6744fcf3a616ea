"""The GPU check's small models, built here and copied with the wheelhouse (no GGUF package on the node).

`tiny-smollm2/`: the embedded SmolLM2's tokenizer and chat template with a 2-layer random model
(~3 MiB in bf16): the tokenizer of the chain's 4B-shaped policy, the chain's judge, and the tokenizer
the GPU tests use. What needs SmolLM2's real weights skips on the node.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

CHECK_TOKENIZER = "tiny-smollm2"


def write_check_models(folder: Path, models_dir: Path) -> Path:
    """<folder>/tiny-smollm2 (kept when present); converts the embedded model into models_dir first if needed."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from lib.embedded import resolve_model_path

    target = folder / CHECK_TOKENIZER
    if (target / "config.json").is_file():
        return target
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path("embedded:smollm2-135m-instruct", models_dir))
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=8192,
                         tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    folder.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=folder, prefix=f".{CHECK_TOKENIZER}."))
    try:
        LlamaForCausalLM(config).to(torch.bfloat16).save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
