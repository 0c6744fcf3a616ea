"""QLoRA training on CPU: loss goes down, only LoRA changes, the adapter loads, resume, 2 processes."""

import json
import os
import stat
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from lib.chat import IGNORE_INDEX, tokenize_with_labels, training_messages
from lib.models import load_base_for_training
from lib.pipeline.config import TrainConfig
from lib.training.trainer import attach_lora, discover_lora_targets, training_arguments
from stages import train
from tests.helpers import REPO

# fp32 sums of n terms in another order differ by up to ~n x 2^-24 (6e-8) of their magnitude; with the
# ~100-1000 terms of a small batch's reductions, 2e-5 covers any order while staying far below a real error.
FP32_SUM_RTOL = 2e-5
ALL_PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def test_lora_targets_are_discovered_from_the_model(tiny_model_dir):
    model = load_base_for_training(str(tiny_model_dir), "nf4", True, torch.float32, gradient_checkpointing=False)
    assert type(model.model.layers[0].mlp.down_proj).__name__ == "Linear4bit"
    assert discover_lora_targets(model) == ALL_PROJECTIONS


def test_collator_pads_labels_with_ignore_index_and_keeps_the_end_of_turn(smollm2_tokenizer):
    from transformers import DataCollatorForSeq2Seq

    short = tokenize_with_labels(smollm2_tokenizer, training_messages("1+1?", "2\n#### 2"))
    long = tokenize_with_labels(smollm2_tokenizer, training_messages("What is 10 + 20 + 30?", "60\n#### 60"))
    batch = DataCollatorForSeq2Seq(smollm2_tokenizer, padding="longest", label_pad_token_id=IGNORE_INDEX)(
        [{"input_ids": e.input_ids, "labels": e.labels} for e in (short, long)])
    n = len(short.input_ids)
    eot = smollm2_tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert smollm2_tokenizer.pad_token_id == eot  # the case that must not erase a real label
    assert batch["labels"][0, :n].tolist() == short.labels and short.labels[-2] == eot
    assert (batch["labels"][0, n:] == IGNORE_INDEX).all() and (batch["attention_mask"][0, n:] == 0).all()


def test_qlora_steps_lower_the_loss_and_change_only_lora_parameters(tiny_model_dir, smollm2_tokenizer, tmp_path):
    import datasets
    from transformers import DataCollatorForSeq2Seq, Trainer

    torch.manual_seed(0)
    model = load_base_for_training(str(tiny_model_dir), "nf4", True, torch.float32, gradient_checkpointing=True)
    model, _ = attach_lora(model, r=8, alpha=16, dropout=0.0, target_modules=None)
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}

    example = tokenize_with_labels(smollm2_tokenizer, training_messages("What is 2 + 3?", "2 + 3 = 5.\n#### 5"))
    data = datasets.Dataset.from_dict({"input_ids": [example.input_ids] * 16, "labels": [example.labels] * 16})
    settings = TrainConfig(epochs=3, learning_rate=1e-2, warmup_ratio=0.0, per_device_batch_size=4,
                           gradient_accumulation_steps=1, logging_steps=1, save_steps=1000)
    args = training_arguments(tmp_path, settings, torch.float32, on_gpu=False)
    trainer = Trainer(model=model, args=args, train_dataset=data,
                      data_collator=DataCollatorForSeq2Seq(smollm2_tokenizer, label_pad_token_id=IGNORE_INDEX))
    trainer.train()

    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == 12 and losses[-1] < losses[0] - 0.5  # a random model starts at ln(49152) ~ 10.8
    changed = {name for name, tensor in model.state_dict().items() if not torch.equal(tensor, before[name])}
    assert changed and all("lora_" in name for name in changed)
    assert {name for name in before if "lora_B" in name} <= changed


def test_adapter_loads_with_peft_and_changes_the_logits(train_run, tiny_model_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    run_dir = train_run.prepared("a")
    result = train_run(train, "a")
    assert "adapter written" in result.output
    adapter = run_dir / "adapter"
    assert {"adapter_config.json", "adapter_model.safetensors",
            "training_complete.json"} <= {p.name for p in adapter.iterdir()}
    assert not list(adapter.glob("*.bin"))
    # Readable as the umask allows (safetensors itself writes 0600): teammates on a shared cluster read them.
    umask = os.umask(0)
    os.umask(umask)
    for weights in [adapter / "adapter_model.safetensors", *run_dir.glob("checkpoints/*/adapter_model.safetensors")]:
        assert stat.S_IMODE(weights.stat().st_mode) == 0o666 & ~umask, weights
    record = json.loads((adapter / "training_complete.json").read_text())
    assert record["global_step"] == 6 and record["global_batch_size"] == 4 and record["num_processes"] == 1

    ids = torch.tensor([[1, 345, 678, 910]])
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    base_logits = base(ids).logits
    tuned = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), adapter)
    assert not torch.allclose(tuned(ids).logits, base_logits, atol=1e-4)

    again = train_run(train, "a")
    assert "already trained on these inputs" in again.output


@pytest.mark.parametrize("packing", ["padding_free", "padded"])
def test_interrupted_training_resumes_and_matches_an_uninterrupted_run(train_run, packing):
    mode = ("--set", f"train.packing={packing}")
    straight = train_run.prepared("straight", *mode)
    train_run(train, "straight", *mode)

    sliced = train_run.prepared("sliced", *mode)
    first = train_run(train, "sliced", "--stop-after", "3")
    assert "stopped after 3 steps" in first.output and f"{packing} batches" in first.output
    assert not (sliced / "adapter").exists() and (sliced / "checkpoints" / "checkpoint-3").is_dir()
    second = train_run(train, "sliced")
    assert "resuming from checkpoint-3" in second.output

    steps = [json.loads(line)["step"] for line in (sliced / "train_log.jsonl").read_text().splitlines()
             if "loss" in json.loads(line)]
    assert steps == [1, 2, 3, 4, 5, 6]
    resumed = load_file(sliced / "adapter" / "adapter_model.safetensors")
    uninterrupted = load_file(straight / "adapter" / "adapter_model.safetensors")
    assert resumed.keys() == uninterrupted.keys()
    for name in resumed:
        torch.testing.assert_close(resumed[name], uninterrupted[name], rtol=1e-4, atol=1e-5)


def test_changed_inputs_set_old_checkpoints_aside_and_start_afresh(train_run):
    run_dir = train_run.prepared("c")
    train_run(train, "c", "--stop-after", "2")
    result = train_run(train, "c", "--set", "train.learning_rate=0.02", "--reconfigure")
    assert "inputs changed (or --force), starting afresh" in result.output and "resuming" not in result.output
    (aside,) = (run_dir / "superseded").iterdir()
    assert (aside / "checkpoints" / "checkpoint-2" / "adapter_model.safetensors").is_file()
    assert (aside / "train_log.jsonl").is_file()


@pytest.mark.slow
def test_two_process_accelerate_launch_gives_one_adapter_with_the_global_batch(train_run, tmp_path):
    run_dir = train_run.prepared("ddp")
    args = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
            "-m", "stages.train", *train_run.common, "--run", "ddp", "--set", "train.per_device_batch_size=2",
            "--reconfigure"]
    done = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    record = json.loads((run_dir / "adapter" / "training_complete.json").read_text())
    assert record["num_processes"] == 2
    assert record["global_batch_size"] == 2 * 1 * 2  # per device x accumulation x processes
    assert record["global_step"] == 6  # 12 examples / 4 per step x 2 epochs
    assert done.stdout.count("adapter written") == 1
    assert len(list(tmp_path.glob("artifacts/run_ddp/adapter*"))) == 1


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_qlora_on_cuda_with_bf16_compute(train_run):
    run_dir = train_run.prepared("gpu")
    train_run(train, "gpu", "--set", "quant.compute_dtype=auto", "--set", "hardware.device=cuda")
    record = json.loads((run_dir / "adapter" / "training_complete.json").read_text())
    assert record["compute_dtype"] == "bfloat16" and record["quantization"] == "nf4"
    losses = [json.loads(line)["loss"] for line in (run_dir / "train_log.jsonl").read_text().splitlines()
              if "loss" in json.loads(line)]
    assert losses[-1] < losses[0]


def test_padding_free_and_labelled_logits_give_the_padded_batch_loss_and_gradients(tiny_model_dir, smollm2_tokenizer):
    """Same examples, fp32, no quantization: every packing x logits mode against the padded batch with
    logits everywhere, packed rows with transformers' SDPA (a block mask over the row) and with the
    per-example attention the trainer runs them with (lib/training/packed_attention.py). The modes
    sum the same terms in another order (another again per CPU and thread count), so each tensor is
    compared to FP32_SUM_RTOL of its own largest value: a wrong mask or label moves the loss and
    gradients by far more (>1e-3 relative)."""
    from transformers import AutoModelForCausalLM

    from lib.training.loss import LabelledLogitsLoss, make_collator
    from lib.training.packed_attention import PACKED_ATTENTION, packed_attention_for

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    # As load_base_for_training sets it: with a KV cache transformers does not look for packed sequences.
    model.config.use_cache = False
    model, _ = attach_lora(model, r=4, alpha=8, dropout=0.0, target_modules=None)
    with torch.no_grad():  # LoRA B starts at zero; give it values so its gradients differ per mode if wrong
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.02)
    examples = [tokenize_with_labels(smollm2_tokenizer, training_messages(q, a)) for q, a in
                [("What is 2 + 3?", "2 + 3 = 5.\n#### 5"), ("Tom has 4 apples and eats one. How many are left?",
                                                          "4 - 1 = 3 apples are left.\n#### 3"), ("1+1?", "#### 2")]]
    features = [{"input_ids": e.input_ids, "labels": e.labels} for e in examples]
    labelled = sum(sum(label != IGNORE_INDEX for label in e.labels[1:]) for e in examples)

    def loss_and_grads(packing, logits, attention="sdpa"):
        model.set_attn_implementation(attention)
        model.zero_grad()
        batch = make_collator(smollm2_tokenizer, packing, logits)(features)
        if logits == "labelled":
            labels = batch.pop("labels")
            outputs = model(**batch)
            assert outputs.logits.numel() == 0  # the model's own LM head did not run
            with pytest.MonkeyPatch.context() as patch:  # 2 rows a chunk: several chunks on this small batch
                patch.setattr("lib.training.loss.LOSS_CHUNK_ROWS", 2)
                loss = LabelledLogitsLoss(model.get_output_embeddings())(outputs, labels, num_items_in_batch=labelled)
        else:
            loss = model(**batch, num_items_in_batch=labelled).loss
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}

    reference_loss, reference_grads = loss_and_grads("padded", "all")
    assert make_collator(smollm2_tokenizer, "padding_free", "all")(features)["input_ids"].shape[0] == 1
    assert packed_attention_for(torch.device("cpu")) == PACKED_ATTENTION
    for packing, logits, attention in [("padding_free", "all", "sdpa"), ("padded", "labelled", "sdpa"),
                                       ("padding_free", "labelled", "sdpa"), ("padding_free", "all", PACKED_ATTENTION),
                                       ("padding_free", "labelled", PACKED_ATTENTION)]:
        loss, grads = loss_and_grads(packing, logits, attention)
        torch.testing.assert_close(loss, reference_loss, rtol=FP32_SUM_RTOL, atol=0)
        for name, grad in grads.items():
            scale = float(reference_grads[name].abs().max())
            torch.testing.assert_close(grad, reference_grads[name], rtol=FP32_SUM_RTOL, atol=FP32_SUM_RTOL * scale,
                                       msg=f"{packing}/{logits}/{attention} {name}")


def test_one_process_on_a_simulated_4_gpu_machine_trains_with_the_configured_global_batch(train_run, monkeypatch):
    """transformers gives a single process n_gpu = torch.cuda.device_count() and multiplies its batch
    by it; simulated here by that count (4) on the CPU. 12 examples, 2 per step, 2 epochs -> 12 steps;
    a 4x batch would take 4."""
    from transformers import TrainingArguments

    monkeypatch.setattr(TrainingArguments, "n_gpu", property(lambda self: 4))
    run_dir = train_run.prepared("four")
    result = train_run(train, "four", "--set", "train.per_device_batch_size=2", "--reconfigure")
    record = json.loads((run_dir / "adapter" / "training_complete.json").read_text())
    assert record["global_step"] == 12 and record["global_batch_size"] == 2
    assert "global batch 2" in result.output


def test_every_train_key_reaches_the_trainer_through_the_declared_mapping_or_by_name(tmp_path):
    """TrainingArguments are built from the train section by one declared mapping: a new train key is
    either mapped there or read by name (listed here), never silently ignored."""
    from dataclasses import fields

    from lib.training.trainer import TRAINING_ARGUMENTS

    read_by_name = {"gradient_checkpointing", "group_by_length", "packing", "logits", "report_to"}
    assert {f.name for f in fields(TrainConfig)} == set(TRAINING_ARGUMENTS.values()) | read_by_name
    settings = TrainConfig(learning_rate=3e-4, save_steps=7, warmup_ratio=0.1, seed=5)
    args = training_arguments(tmp_path, settings, torch.float32, on_gpu=False)
    assert (args.learning_rate, args.save_steps, args.warmup_steps, args.seed, args.data_seed) == (3e-4, 7, 0.1, 5, 5)
