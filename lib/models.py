"""How a model is loaded: every model of the toolkit loads here (where an embedded one comes from:
lib/embedded.py).

The loaders: the base for training (4-bit nf4 or not, prepared for k-bit
training), the base + adapter for evaluation (see MODEL_FORMATS), the safeguard classifier.
4-bit loading goes through one `nf4_config`, so evaluation sees the base that was trained. Each
process places the whole model on its own device (never device_map="auto" across ranks), so
`accelerate launch` gives plain data parallelism. Weights load from safetensors unless
a pickle folder is explicitly allowed.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from lib.devices import process_state, resolve_compute_dtype
from lib.embedded import resolve_model_path
from lib.errors import InputError
from lib.hub import hub_errors


def nf4_config(double_quant: bool, compute_dtype, quant_storage=torch.uint8):
    """The one 4-bit (QLoRA) quantization config, for training and for evaluating `nf4` alike, so an
    adapter is evaluated on the base it was trained on. `quant_storage` is only how the packed codes
    are held (the compute dtype for FSDP); the codes, and so the weights, are the same in any."""
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=double_quant,
                              bnb_4bit_compute_dtype=compute_dtype, bnb_4bit_quant_storage=quant_storage)


def load_tokenizer(base: str, models_dir: str | Path, revision: str | None = None, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    path = resolve_model_path(base, models_dir)
    with hub_errors(path, "model.base", revision):
        tokenizer = AutoTokenizer.from_pretrained(path, revision=revision, trust_remote_code=trust_remote_code)
    if tokenizer.chat_template is None:
        raise InputError(f"model {base!r}: tokenizer has no chat template (an instruct model is expected)")
    return tokenizer


def fsdp_launch() -> bool:
    """Whether accelerate launched this process to shard the model with FSDP (it sets ACCELERATE_USE_FSDP)."""
    return os.environ.get("ACCELERATE_USE_FSDP", "false").lower() in ("1", "true")


def resolve_quant_storage(quant_storage: str, compute_dtype: torch.dtype) -> torch.dtype:
    """quant.quant_storage as a dtype: auto is the compute dtype under FSDP (it flattens a wrapped
    block's parameters into one tensor of one dtype, the packed 4-bit codes included), else uint8."""
    if quant_storage == "auto":
        return compute_dtype if fsdp_launch() else torch.uint8
    storage = getattr(torch, quant_storage)
    if fsdp_launch() and storage != compute_dtype:
        raise InputError(f"quant.quant_storage {quant_storage}: FSDP shards a 4-bit base only when its storage is"
                         f" the compute dtype ({str(compute_dtype).removeprefix('torch.')}); set"
                         " quant.quant_storage=auto")
    return storage


def load_base_for_training(path: str, quantization: str, double_quant: bool, compute_dtype: torch.dtype,
                           gradient_checkpointing: bool, revision: str | None = None,
                           trust_remote_code: bool = False, quant_storage: str = "auto"):
    """The base for QLoRA (nf4, prepared by peft) or LoRA, on this process's device. Under FSDP it is
    left where transformers loads it (FSDP places and shards it) and kept in one dtype: peft's
    preparation would cast the norms to fp32, a second dtype in a block FSDP must flatten."""
    from peft import prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM

    sharded = fsdp_launch()
    quant_config = nf4_config(double_quant, compute_dtype, resolve_quant_storage(quant_storage, compute_dtype)) \
        if quantization == "nf4" else None
    with hub_errors(path, "model.base", revision):
        model = AutoModelForCausalLM.from_pretrained(
            path, revision=revision, trust_remote_code=trust_remote_code, use_safetensors=True,
            quantization_config=quant_config, dtype=compute_dtype,
            device_map=None if sharded else {"": process_state().device},
        )
    model.config.use_cache = False  # the KV cache is useless in training and clashes with checkpointing
    # Non-reentrant checkpointing works with frozen inputs and with DDP.
    checkpointing_kwargs = {"use_reentrant": False}
    if quant_config is not None and not sharded:
        return prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing,
                                               gradient_checkpointing_kwargs=checkpointing_kwargs)
    if quant_config is not None:
        model.requires_grad_(False)  # the frozen base, as peft's preparation leaves it
    if gradient_checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=checkpointing_kwargs)
    return model


# eval.model_format: what an adapter is applied to. The adapter was trained against the nf4-quantized
# base and partly corrects its quantization error, so `merged` rebuilds that base (quantized as in
# training, then dequantized) before merging: the trained model at full-precision speed.
# `merged_original` merges into the checkpoint's own weights instead: not the model that was trained.
MODEL_FORMATS = ("merged", "merged_original", "nf4")


@dataclass(frozen=True)
class TrainedBase:
    """How training loaded the base an adapter was trained against (the run's quant section)."""

    quantization: str  # "nf4" or "none"
    double_quant: bool
    compute_dtype: torch.dtype  # training loaded (and quantized) the weights in this dtype

    @classmethod
    def from_quant(cls, quant) -> TrainedBase:
        """From a QuantConfig, its compute dtype resolved for this process's device as training does."""
        return cls(quant.quantization, quant.double_quant,
                   resolve_compute_dtype(quant.compute_dtype, process_state().device))


def base_precision(model_format: str, adapter: Path | None, trained: TrainedBase | None) -> str:
    """The weights the evaluation runs on: `original` (the checkpoint's own, at the evaluation
    dtype), `nf4` (4-bit, the adapter beside it, as trained) or `nf4-dequantized` (the trained 4-bit
    base dequantized, the adapter merged into it). A base model alone is always `original`;
    `trained` is needed only with an adapter."""
    if adapter is None or model_format == "merged_original":
        return "original"
    if model_format == "nf4":
        return "nf4"
    return "nf4-dequantized" if trained.quantization == "nf4" else "original"


def load_for_inference(base_path: str, adapter: Path | None, model_format: str, dtype: torch.dtype,
                       trained: TrainedBase | None = None, revision: str | None = None, trust_remote_code: bool = False,
                       allow_pickle: bool = False):
    """(model, tokenizer, base precision) on this process's device, the adapter applied to the base
    `base_precision` names. Weights load from safetensors only, unless `allow_pickle` (a folder the
    user trusts)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if adapter is not None:
        check_adapter_base(adapter, base_path)
    precision = base_precision(model_format, adapter, trained)
    # An adapter is merged at full precision and the result cast once to the evaluation dtype: a LoRA
    # delta is small next to the weights, and merging in bf16 (8 mantissa bits) would round part of
    # the training away before it is evaluated. The original weights in fp32 are exact (bf16 widens).
    merges = adapter is not None and precision != "nf4"
    load_dtype, quant_config = (torch.float32 if merges else dtype), None
    if precision == "nf4":  # quantized from the dtype training loaded (the same 4-bit codes), computing in eval's
        load_dtype, quant_config = trained.compute_dtype, nf4_config(trained.double_quant, dtype)
    elif precision == "nf4-dequantized":  # quantized from the same dtype as in training: the same 4-bit codes
        load_dtype, quant_config = trained.compute_dtype, nf4_config(trained.double_quant, trained.compute_dtype)
    with hub_errors(base_path, "model", revision):
        model = AutoModelForCausalLM.from_pretrained(
            base_path, revision=revision, trust_remote_code=trust_remote_code,
            use_safetensors=None if allow_pickle else True, quantization_config=quant_config, dtype=load_dtype,
            device_map={"": process_state().device},
        )
    if precision == "nf4":
        keep_4bit_compute_dtype(model, dtype)
        cast_unquantized(model, dtype)
    if precision == "nf4-dequantized":
        model = dequantized(model, torch.float32 if merges else dtype)
        if process_state().is_main_process:
            trained_name, eval_name = (str(d).removeprefix("torch.") for d in (trained.compute_dtype, dtype))
            print(f"model: the base quantized to nf4 as in training ({trained_name}), dequantized to float32;"
                  f" the adapter merged into it, then cast to {eval_name}")
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter))
        if merges:
            model = model.merge_and_unload().to(dtype)
    with hub_errors(base_path, "model", revision):
        tokenizer = AutoTokenizer.from_pretrained(base_path, revision=revision, trust_remote_code=trust_remote_code)
    return model.eval(), tokenizer, precision


def keep_4bit_compute_dtype(model, dtype: torch.dtype) -> None:
    """Make an fp32 evaluation of a 4-bit model compute in fp32 on every CPU. bitsandbytes' CPU backend
    repacks the weights for its own kernel at the first inference call on CPUs with AVX512-BF16, and
    that kernel casts the input and the scales to bf16 whatever the compute dtype: on those CPUs an
    fp32 evaluation would silently be a bf16 one, and differ from the same evaluation elsewhere.
    A bf16 evaluation keeps the fast kernel, whose arithmetic is then the dtype it asked for."""
    if dtype == torch.float32:
        without_bf16_cpu_kernel(model)


def without_bf16_cpu_kernel(model) -> None:
    """Turn off bitsandbytes' AVX512-BF16 repacking (`support_avx512bf16_for_cpu`, the flag each
    Linear4bit reads before repacking): its 4-bit layers dequantize and multiply in their compute dtype."""
    for module in model.modules():
        if getattr(module, "support_avx512bf16_for_cpu", False):
            module.support_avx512bf16_for_cpu = False


def cast_unquantized(model, dtype: torch.dtype) -> None:
    """The modules a 4-bit model keeps unquantized (norms, embeddings, head) in the evaluation dtype:
    loaded in training's dtype so the 4-bit codes match, they are what training upcast them from."""
    for parameter in model.parameters():
        if parameter.dtype.is_floating_point and parameter.dtype != dtype:
            parameter.data = parameter.data.to(dtype)


def dequantized(model, dtype: torch.dtype):
    """The 4-bit model's weights as `dtype` tensors of the same values (transformers' dequantize, its
    per-call notice silenced); `.to` also moves the modules that stayed unquantized (norms, embeddings)."""
    from transformers.utils import logging

    verbosity = logging.get_verbosity()
    logging.set_verbosity_error()
    try:
        return model.dequantize(dtype=dtype).to(dtype)
    finally:
        logging.set_verbosity(verbosity)


def check_adapter_base(adapter: Path, base_path: str) -> None:
    """Refuse an adapter folder trained on another base model."""
    config_file = adapter / "adapter_config.json"
    if not config_file.is_file():
        raise InputError(f"{adapter}: not a PEFT adapter folder (no adapter_config.json; run `make train` first)")
    trained_on = json.loads(config_file.read_text(encoding="utf-8")).get("base_model_name_or_path")
    if trained_on and not _same_model(trained_on, base_path):
        raise InputError(f"{adapter}: adapter was trained on {trained_on!r},"
                         f" but this run's base model is {base_path!r}")


def _same_model(a: str, b: str) -> bool:
    # Two local folders are the same base when their configs agree (the embedded model may be
    # converted into another models folder); otherwise compare the hub ids / paths.
    configs = [Path(x) / "config.json" for x in (a, b)]
    if all(c.is_file() for c in configs):
        return json.loads(configs[0].read_text()) == json.loads(configs[1].read_text())
    return a.rstrip("/") == b.rstrip("/")


def load_classifier(folder: Path, allow_pickle: bool, trust_remote_code: bool):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(
        folder, use_safetensors=None if allow_pickle else True, trust_remote_code=trust_remote_code,
        device_map={"": process_state().device}).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code)
    if tokenizer.pad_token is None:  # batches need padding; decoder classifiers read the last real token
        tokenizer.pad_token = tokenizer.eos_token
    model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer
