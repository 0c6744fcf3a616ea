import json
import os
import stat

import pytest
import torch

from lib.embedded import embedded_gguf_path, resolve_model_path
from lib.errors import InputError
from tests.helpers import REPO


def test_embedded_gguf_is_found_through_package_metadata():
    path = embedded_gguf_path("smollm2-135m-instruct")
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.is_file()


def test_embedded_model_converts_to_safetensors_once(models_dir, smollm2_dir):
    files = {p.name for p in smollm2_dir.iterdir()}
    assert "model.safetensors" in files and not any(name.endswith(".bin") for name in files)
    config = json.loads((smollm2_dir / "config.json").read_text())
    assert "quantization_config" not in config  # the GGUF record would block BitsAndBytesConfig
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE((smollm2_dir / "model.safetensors").stat().st_mode) == 0o666 & ~umask  # not 0600
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


# --- eval.model_format: which base an adapter is evaluated on --------------------------------------

FP32_UNIT_ROUNDOFF = 2.0 ** -24


@pytest.fixture
def on_cpu(monkeypatch):
    """The fp32 arithmetic below is the CPU's: pinned there on any machine (a GPU may use TF32)."""
    monkeypatch.setenv("GSM8K_TOOLKIT_CPU_ONLY", "1")


def random_adapter(model_dir, folder, b_scale: float, seed: int = 0):
    """A LoRA adapter on every projection with random A and B (B scaled by `b_scale`): a trained
    adapter's shape without training, so merging it changes the model."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(model_dir),
                           LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", init_lora_weights=False))
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.mul_(b_scale)
    model.save_pretrained(folder)
    return folder


def last_logits(model_dir, adapter, model_format, prompts):
    from lib.models import TrainedBase, load_for_inference

    trained = TrainedBase("nf4", double_quant=True, compute_dtype=torch.float32)
    model, _, precision = load_for_inference(str(model_dir), adapter, model_format, torch.float32, trained)
    with torch.no_grad():
        return torch.stack([model(torch.tensor([ids])).logits[0, -1] for ids in prompts]), precision


def merge_tolerance(config, logits: torch.Tensor) -> float:
    """fp32 rounding between the two computations: nf4 computes x·Wq + s·B(A·x), merged x·(Wq + s·BA),
    with Wq the same dequantized fp32 values (code x absmax) in both. Each chained matmul (about 4 a
    layer, plus the head) adds at most K·u relative error (the fp32 dot-product bound, K its length),
    and to first order these add up."""
    length = max(config.hidden_size, config.intermediate_size)
    matmuls = 4 * config.num_hidden_layers + 1
    return float(logits.abs().max()) * matmuls * length * FP32_UNIT_ROUNDOFF


def test_merged_is_the_trained_model_and_merged_original_is_not(on_cpu, tiny_model_dir, smollm2_tokenizer, tmp_path):
    from transformers import AutoConfig

    adapter = random_adapter(tiny_model_dir, tmp_path / "adapter", b_scale=1.0)
    prompts = [smollm2_tokenizer(text)["input_ids"] for text in
               ("Natalia sold clips to 48 friends.", "What is 7 times 8?", "A train leaves at noon.")]
    trained, precision = last_logits(tiny_model_dir, adapter, "nf4", prompts)
    assert precision == "nf4"
    tolerance = merge_tolerance(AutoConfig.from_pretrained(tiny_model_dir), trained)

    merged, precision = last_logits(tiny_model_dir, adapter, "merged", prompts)
    assert precision == "nf4-dequantized"
    assert (merged - trained).abs().max() <= tolerance
    original, precision = last_logits(tiny_model_dir, adapter, "merged_original", prompts)
    assert precision == "original"
    assert (original - trained).abs().max() > 100 * tolerance  # the base's quantization error, lost


def test_base_precision_names_the_weights_evaluated():
    from lib.models import TrainedBase, base_precision

    qlora, plain = (TrainedBase(q, True, torch.bfloat16) for q in ("nf4", "none"))
    adapter = object()
    assert base_precision("merged", adapter, qlora) == "nf4-dequantized"
    assert base_precision("merged", adapter, plain) == "original"  # trained on the unquantized base
    assert base_precision("merged_original", adapter, qlora) == "original"
    assert base_precision("nf4", adapter, qlora) == "nf4"
    assert base_precision("nf4", None, qlora) == "original"  # a base model alone


def greedy(model, prompt: list[int], max_new_tokens: int) -> tuple[list[int], torch.Tensor]:
    """Greedy tokens one by one with the logits each was chosen from."""
    out = model.generate(torch.tensor([prompt]), max_new_tokens=max_new_tokens, do_sample=False,
                         output_scores=True, return_dict_in_generate=True, pad_token_id=0)
    return out.sequences[0, len(prompt):].tolist(), torch.cat(out.scores)


@pytest.mark.slow
def test_merged_and_nf4_answer_the_demo_questions_alike(on_cpu, smollm2_dir, smollm2_tokenizer, tmp_path):
    """Greedy answers to the demo's questions on the real SmolLM2: `merged` gives the tokens the
    trained model (`nf4`) gives, except where the trained model's top two logits are within the
    rounding tolerance (a near-tie that either may break); `merged_original` answers differently."""
    from transformers import AutoConfig

    from lib.models import TrainedBase, load_for_inference

    adapter = random_adapter(smollm2_dir, tmp_path / "adapter", b_scale=0.05)
    lines = (REPO / "data" / "demo" / "gsm8k_test.jsonl").read_text().splitlines()[:4]
    prompts = [smollm2_tokenizer.apply_chat_template([{"role": "user", "content": json.loads(line)["question"]}],
                                                     add_generation_prompt=True)["input_ids"] for line in lines]
    trained = TrainedBase("nf4", double_quant=True, compute_dtype=torch.float32)
    answers = {}
    for model_format in ("nf4", "merged", "merged_original"):
        model = load_for_inference(str(smollm2_dir), adapter, model_format, torch.float32, trained)[0]
        with torch.no_grad():
            answers[model_format] = [greedy(model, prompt, max_new_tokens=32) for prompt in prompts]

    config = AutoConfig.from_pretrained(smollm2_dir)
    for (tokens, scores), (merged_tokens, _) in zip(answers["nf4"], answers["merged"]):
        if tokens == merged_tokens:
            continue
        first = next(i for i, (a, b) in enumerate(zip(tokens, merged_tokens)) if a != b)
        top_two = scores[first].topk(2).values
        assert top_two[0] - top_two[1] <= merge_tolerance(config, scores[first]), f"diverged at token {first}"
    assert [t for t, _ in answers["merged_original"]] != [t for t, _ in answers["nf4"]]


BF16_UNIT_ROUNDOFF = 2.0 ** -8


def linear_weights(model) -> dict[str, torch.Tensor]:
    return {name: module.weight.detach().float() for name, module in model.named_modules()
            if isinstance(module, torch.nn.Linear)}


def bf16_merge_the_old_way(model_dir, adapter):
    """The merge before fp32 merging: the nf4 base dequantized to bf16 and the LoRA delta added in bf16."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from lib.models import dequantized, nf4_config

    model = AutoModelForCausalLM.from_pretrained(model_dir, quantization_config=nf4_config(True, torch.float32),
                                                 dtype=torch.float32, device_map={"": "cpu"})
    return PeftModel.from_pretrained(dequantized(model, torch.bfloat16), str(adapter)).merge_and_unload()


def load_merged(model_dir, adapter, dtype):
    from lib.models import TrainedBase, load_for_inference

    trained = TrainedBase("nf4", double_quant=True, compute_dtype=torch.float32)
    return load_for_inference(str(model_dir), adapter, "merged", dtype, trained)[0]


def test_bf16_merged_weights_are_the_rounding_of_the_fp32_merge(on_cpu, tiny_model_dir, tmp_path):
    # A delta a tenth of the random adapter's: the size of a trained one next to the weights.
    adapter = random_adapter(tiny_model_dir, tmp_path / "adapter", b_scale=0.1)
    exact = linear_weights(load_merged(tiny_model_dir, adapter, torch.float32))
    merged = linear_weights(load_merged(tiny_model_dir, adapter, torch.bfloat16))
    old = linear_weights(bf16_merge_the_old_way(tiny_model_dir, adapter))
    assert exact.keys() == merged.keys() == old.keys() and len(exact) > 1
    for name, weight in exact.items():  # rounded once: bit for bit the fp32 merge cast to bf16
        assert torch.equal(merged[name], weight.to(torch.bfloat16).float()), name
    # Rounded once, each weight is the bf16 value nearest the fp32 merge: never farther than the
    # old merge's, which rounded the base to bf16 first and the sum again; farther somewhere is a defect.
    worse = 0
    for name, weight in exact.items():
        assert ((merged[name] - weight).abs() <= (old[name] - weight).abs()).all(), name
        worse += int(((old[name] - weight).abs() > (merged[name] - weight).abs()).sum())
    assert worse > 0, "the two merges agree everywhere: the comparison would prove nothing"


def bf16_tolerance(config, logits: torch.Tensor) -> float:
    """bf16 rounding between nf4 and merged evaluated in bf16, for either of bitsandbytes' CPU paths (its
    AVX512-BF16 kernel, which rounds the input and the scales to bf16, or a bf16 dequantize and matmul):
    each side rounds a matmul's input, its weights (merged: W + s·BA once; nf4: the scales) and its
    output, at most 3 bf16 unit roundoffs a matmul apart from the fp32 accumulation (negligible here),
    chained over about 4 matmuls a layer plus the head, to first order; x2 for the two sides."""
    matmuls = 4 * config.num_hidden_layers + 1
    return float(logits.abs().max()) * matmuls * 2 * 3 * BF16_UNIT_ROUNDOFF


@pytest.mark.parametrize("kernel", ["bitsandbytes' choice", "dequantize-matmul"])
def test_nf4_and_merged_agree_in_bf16_within_bf16_rounding(on_cpu, tiny_model_dir, smollm2_tokenizer, tmp_path,
                                                          kernel):
    """Both of bitsandbytes' CPU paths where this CPU has AVX512-BF16 (its own choice is then the bf16
    kernel; the repack flag turned off gives the other); elsewhere both cases run the second path."""
    from bitsandbytes.functional import has_avx512bf16
    from transformers import AutoConfig

    from lib.models import TrainedBase, load_for_inference, without_bf16_cpu_kernel

    adapter = random_adapter(tiny_model_dir, tmp_path / "adapter", b_scale=1.0)
    prompts = [smollm2_tokenizer(text)["input_ids"] for text in ("Natalia sold clips to 48 friends.", "What is 7?")]
    trained = TrainedBase("nf4", double_quant=True, compute_dtype=torch.float32)

    def logits(model_format, with_adapter=adapter):
        model = load_for_inference(str(tiny_model_dir), with_adapter, model_format, torch.bfloat16, trained)[0]
        if kernel == "dequantize-matmul":
            without_bf16_cpu_kernel(model)
        with torch.no_grad():
            return torch.stack([model(torch.tensor([ids])).logits[0, -1].float() for ids in prompts])

    nf4, merged, untrained = logits("nf4"), logits("merged"), logits("nf4", None)
    tolerance = bf16_tolerance(AutoConfig.from_pretrained(tiny_model_dir), nf4)
    path = ("bitsandbytes' AVX512-BF16 kernel" if has_avx512bf16() and kernel == "bitsandbytes' choice"
            else "bf16 dequantize and matmul")
    print(f"nf4 path: {path}; merged vs nf4 {float((merged - nf4).abs().max()):.3g}, bound {tolerance:.3g}")
    assert (merged - nf4).abs().max() <= tolerance, path
    assert (untrained - nf4).abs().max() > 4 * tolerance  # the adapter's effect: the bound can tell it apart


def dequantized_4bit(model) -> list[torch.Tensor]:
    from bitsandbytes.functional import dequantize_4bit
    from bitsandbytes.nn import Linear4bit  # bitsandbytes' own: peft's LoRA wrapper shares the class name

    return [dequantize_4bit(m.weight.data, m.weight.quant_state).float() for m in model.modules()
            if isinstance(m, Linear4bit)]


def test_nf4_evaluation_uses_the_4bit_codes_training_made(on_cpu, tiny_model_dir, tmp_path):
    """Trained in bf16 (a GPU, or a CPU with AVX512-BF16) and evaluated in fp32: the base is quantized
    from the same bf16 weights as in training, and only the computation is fp32."""
    from lib.models import TrainedBase, load_base_for_training, load_for_inference, nf4_config

    adapter = random_adapter(tiny_model_dir, tmp_path / "adapter", b_scale=0.1)
    trained = TrainedBase("nf4", double_quant=True, compute_dtype=torch.bfloat16)
    evaluated = load_for_inference(str(tiny_model_dir), adapter, "nf4", torch.float32, trained)[0]
    training = load_base_for_training(str(tiny_model_dir), "nf4", True, torch.bfloat16, gradient_checkpointing=False)
    codes, trained_codes = dequantized_4bit(evaluated), dequantized_4bit(training)
    assert len(codes) == len(trained_codes) > 1
    assert all(torch.equal(a, b) for a, b in zip(codes, trained_codes))
    assert {p.dtype for p in evaluated.parameters() if p.dtype.is_floating_point} == {torch.float32}

    from transformers import AutoModelForCausalLM  # what the fp32 checkpoint quantizes to: other codes

    fp32_nf4 = nf4_config(True, torch.float32)
    from_fp32 = AutoModelForCausalLM.from_pretrained(tiny_model_dir, quantization_config=fp32_nf4, dtype=torch.float32,
                                                     device_map={"": "cpu"})
    assert not all(torch.equal(a, b) for a, b in zip(dequantized_4bit(from_fp32), trained_codes))
