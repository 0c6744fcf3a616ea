"""What each stage depends on: the config keys its script reads (in the schema's order) and its lib/ code."""

import textwrap

import pytest

from lib.pipeline.config import schema
from lib.pipeline.stage_inputs import (
    RUNTIME_KEYS,
    config_reads,
    lib_modules,
    make_vars,
    param_stages,
    stage_keys,
    stage_names,
)


def test_the_stages_with_params_files_are_those_that_resolve_a_run():
    assert param_stages() == ["export", "infer_ailuminate", "infer_gsm8k", "prep_fewshot", "refine", "score_safety",
                              "summarize", "tokenize", "train"]


@pytest.mark.parametrize("stage", param_stages())
def test_each_stages_keys_are_declared_keys_or_sections_in_the_schemas_order(stage):
    declared = list(schema())
    sections = {name.split(".")[0] for name in declared}
    keys = stage_keys(stage)
    assert keys and all(key in declared or key in sections for key in keys), keys  # a typo'd read fails here
    assert not set(keys) & set(RUNTIME_KEYS)
    first = [declared.index(key) if "." in key else min(i for i, name in enumerate(declared)
                                                         if name.startswith(key + ".")) for key in keys]
    assert first == sorted(first)


def test_a_stage_reads_what_its_script_uses_and_nothing_else():
    assert stage_keys("train") == ("model", "quant", "lora", "train", "eval.adapter", "hardware.device")
    assert stage_keys("prep_fewshot") == ("data.gsm8k_train", "data.gsm8k_hub_config", "fewshot.path",
                                          "fewshot.pool_size", "fewshot.seed")
    assert "thresholds.accuracy" in stage_keys("summarize") and "thresholds.accuracy" not in stage_keys("train")


def test_config_reads_follow_aliases_and_count_a_section_passed_whole(tmp_path):
    script = tmp_path / "stage.py"
    script.write_text(textwrap.dedent("""
        def main(stage):
            config = stage.config
            safety, data = stage.config.safety, stage.config.data
            judge(safety, config.eval.chunk_size, data.ailuminate)
            print(stage.config.train.seed, config.train.epochs, config.lora)
    """))
    assert config_reads(script) == {"safety", "eval.chunk_size", "data.ailuminate", "train.seed", "train.epochs",
                                    "lora"}


def test_a_script_that_hands_the_whole_config_to_lib_is_refused(tmp_path):
    script = tmp_path / "stage.py"
    script.write_text("def main(stage):\n    config = stage.config\n    train(config)\n")
    with pytest.raises(ValueError, match="line 3"):
        config_reads(script)


def test_make_vars_name_every_stage_and_follow_lazy_imports():
    lines = dict(line.split(" := ") for line in make_vars().splitlines())
    assert set(lines) == {f"LIB_{stage.upper()}" for stage in stage_names()}
    # lib/evaluation.py imports the engine (and through it lib.models) inside evaluate: still a prerequisite
    assert "lib/models.py" in lines["LIB_INFER_AILUMINATE"].split()
    assert "lib/training/trainer.py" not in lines["LIB_INFER_AILUMINATE"].split()
    assert lines["LIB_TRAIN"].split() == lib_modules("train")
