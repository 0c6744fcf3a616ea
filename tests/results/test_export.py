"""`make export`: the model as the `merged` evaluation loads it, one folder transformers loads without PEFT."""

import json
import os
import stat

import torch
from click.testing import CliRunner

from tests.helpers import PRESET_DIR


def test_the_export_loads_without_peft_gives_the_merged_evaluations_logits_and_sets_an_old_one_aside(
        train_run, tiny_model_dir, smollm2_tokenizer):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lib.models import TrainedBase, load_for_inference
    from lib.pipeline.presets import load_config
    from stages import export, train

    extra = ("--set", "train.epochs=1")  # 3 steps on the tiny model
    run_dir = train_run.prepared("x", *extra)
    train_run(train, "x", *extra)
    train_run(export, "x", *extra)
    out = run_dir / "merged"
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "README.md"} <= names
    assert not any(name.endswith((".bin", ".pt")) for name in names) and not (run_dir / "merged.partial").exists()
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE((out / "model.safetensors").stat().st_mode) == 0o666 & ~umask  # not safetensors' 0600
    assert "quantization_config" not in json.loads((out / "config.json").read_text())  # a plain model now
    card = (out / "README.md").read_text()
    assert "library_name: transformers" in card and "make summarize RUN=x" in card  # exported before summarize
    assert str(tiny_model_dir) not in card  # no path of this machine (PEFT's template names the base folder)

    exported_tokenizer = AutoTokenizer.from_pretrained(out)
    assert exported_tokenizer.chat_template == smollm2_tokenizer.chat_template
    exported = AutoModelForCausalLM.from_pretrained(out)
    assert not hasattr(exported, "peft_config")
    quant = load_config(PRESET_DIR / "demo.yaml", ["quant.compute_dtype=float32"]).quant
    evaluated, tokenizer, _ = load_for_inference(str(tiny_model_dir), run_dir / "adapter", "merged", torch.float32,
                                                 TrainedBase.from_quant(quant))
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "What is 6 times 7?"}], add_generation_prompt=True,
                                        return_tensors="pt", return_dict=True)["input_ids"]
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    with torch.no_grad():
        exported_logits, evaluated_logits, base_logits = exported(ids).logits, evaluated(ids).logits, base(ids).logits
    # The same fp32 weights (saved and read back exactly) through the same CPU kernels: the same numbers.
    assert torch.equal(exported_logits, evaluated_logits)
    assert not torch.equal(base_logits, exported_logits)  # the training is in it

    # Again after summarize (here its card, as it writes it): the same weights are kept, the card is the run's now.
    weights = (out / "model.safetensors").stat().st_mtime_ns
    (run_dir / "summary.json").write_text("{}")
    (run_dir / "adapter" / "README.md").write_text("---\nlicense: apache-2.0\n---\n\n# x: the run's card\n")
    again = train_run(export, "x", *extra)
    assert "holds these weights already" in again.output and not (run_dir / "superseded").exists()
    assert "# x: the run's card" in (out / "README.md").read_text()
    assert (out / "model.safetensors").stat().st_mtime_ns == weights

    # Other weights (retrained at another learning rate): the first export moves aside, never deleted.
    other = (*extra, "--set", "train.learning_rate=0.02", "--reconfigure")
    train_run(train, "x", *other)
    train_run(export, "x", *other)
    (moved,) = (run_dir / "superseded").glob("*/merged")
    assert (moved / "config.json").is_file() and (out / "config.json").is_file()


def test_a_base_run_has_nothing_to_export(train_run):
    from stages import export

    result = CliRunner().invoke(export.main, [*train_run.common, "--run", "b", "--set", "eval.adapter=none"])
    assert result.exit_code != 0 and "there is no trained model to export" in result.output
