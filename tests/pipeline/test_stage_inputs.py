"""Each stage's declared config keys (lib/pipeline/stage_inputs.py) are exactly what its script reads."""

import textwrap

import pytest

from lib.pipeline.stage_inputs import REPO, RUNTIME_KEYS, STAGE_KEYS, config_reads, lib_modules, make_vars, stage_names


@pytest.mark.parametrize("stage", stage_names())
def test_each_stage_declares_exactly_the_config_keys_its_script_reads(stage):
    declared = set(STAGE_KEYS.get(stage, ()))
    read = config_reads(REPO / "stages" / f"{stage}.py") - set(RUNTIME_KEYS)
    assert read - declared == set(), (f"stages/{stage}.py reads keys STAGE_KEYS does not declare"
                                      " (changing them would not rerun it)")
    assert declared - read == set(), (f"STAGE_KEYS declares keys stages/{stage}.py does not read"
                                      " (changing them reruns it for nothing)")


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
    # lib/engine/evaluation.py imports lib.models inside generate_for_evaluation: still a prerequisite of evaluation
    assert "lib/models.py" in lines["LIB_INFER_AILUMINATE"].split()
    assert "lib/training/trainer.py" not in lines["LIB_INFER_AILUMINATE"].split()
    assert lines["LIB_TRAIN"].split() == lib_modules("train")
