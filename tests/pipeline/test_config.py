import pytest

from lib.errors import InputError
from lib.pipeline.artifacts import validate_run_name
from lib.pipeline.config import Config
from lib.pipeline.presets import load_config
from tests.helpers import PRESET_DIR

PRESETS = sorted(PRESET_DIR.glob("*.yaml"))


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.stem)
def test_every_shipped_preset_loads_with_a_run_command_in_its_header(preset):
    config = load_config(preset)
    assert isinstance(config, Config)
    assert preset.read_text().startswith("#")
    assert "make " in preset.read_text().split("\n\n")[0]


def test_presets_carry_the_required_settings():
    expected = {  # preset: (epochs, k, max_new_tokens, accuracy, safety, sweep)
        "simple": (1.0, 3, 512, 0.26, 0.26, False),
        "medium": (1.0, 5, 512, 0.31, 0.34, True),
        "strong": (2.0, 8, 1024, 0.37, 0.42, False),
    }
    for name, (epochs, k, new_tokens, accuracy, safety, sweep) in expected.items():
        config = load_config(PRESET_DIR / f"{name}.yaml")
        assert config.model.base == "Qwen/Qwen3-4B-Instruct-2507"
        assert (config.quant.quantization, config.quant.double_quant) == ("nf4", True)
        assert config.train.gradient_checkpointing
        assert (config.train.epochs, config.fewshot.k, config.eval.max_new_tokens) == (epochs, k, new_tokens)
        assert (config.thresholds.accuracy, config.thresholds.safety) == (accuracy, safety)
        assert config.sweep.enabled is sweep
        assert (config.smoke.train_limit, config.smoke.gsm8k_limit, config.smoke.ailuminate_limit) == (200, 50, 50)
    assert load_config(PRESET_DIR / "strong.yaml").data.refined_train == "data/gsm8k_train_self-instruct.jsonl"


def test_overrides_apply_and_parse_yaml_values():
    config = load_config(PRESET_DIR / "simple.yaml", ["train.epochs=3", "lora.target_modules=[q_proj, v_proj]",
                                                 "tokenize.system_prompt=null", "sweep.enabled=true"])
    assert config.train.epochs == 3.0 and isinstance(config.train.epochs, float)
    assert config.lora.target_modules == ["q_proj", "v_proj"]
    assert config.sweep.enabled is True


def test_smoke_applies_the_preset_smoke_sizes():
    config = load_config(PRESET_DIR / "simple.yaml", smoke=True)
    assert (config.data.train_limit, config.data.gsm8k_limit, config.data.ailuminate_limit) == (200, 50, 50)
    assert config.refine.question_limit == 16 and config.data.refined_train is None


def test_a_smoke_run_never_writes_the_real_refined_file():
    config = load_config(PRESET_DIR / "strong.yaml", smoke=True)
    assert config.data.refined_train == "data/gsm8k_train_self-instruct.smoke.jsonl"
    assert load_config(PRESET_DIR / "strong.yaml").data.refined_train == "data/gsm8k_train_self-instruct.jsonl"


def test_a_variant_inherits_everything_it_does_not_change():
    simple, medium = load_config(PRESET_DIR / "simple.yaml"), load_config(PRESET_DIR / "medium.yaml")
    assert medium.lora == simple.lora and medium.train == simple.train
    assert medium.fewshot.k == 5


@pytest.mark.parametrize("text, message", [
    ("train:\n  epoch: 2\n", "unknown key 'train.epoch'"),
    ("trian:\n  epochs: 2\n", "unknown section 'trian'"),
    ("train:\n  epochs: two\n", "key 'train.epochs' expects float"),
    ("train:\n  learning_rate: 1e-4x\n", "key 'train.learning_rate' expects float"),
    ("fewshot:\n  k: 1e1\n", "key 'fewshot.k' expects int"),  # an exponent is a float, never an int
    ("train:\n  gradient_checkpointing: 1\n", "key 'train.gradient_checkpointing' expects bool"),
    ("lora:\n  r: 8.5\n", "key 'lora.r' expects int"),
    ("quant:\n  quantization: int3\n", "key 'quant.quantization' expects one of 'nf4', 'none'"),
    ("lora:\n  target_modules: q_proj\n", "key 'lora.target_modules' expects a list of str or null"),
])
def test_unknown_key_or_wrong_type_fails_naming_key_and_file(tmp_path, text, message):
    preset = tmp_path / "bad.yaml"
    preset.write_text(text)
    with pytest.raises(InputError) as err:
        load_config(preset)
    assert str(err.value).startswith(f"{preset}: {message}")


def test_a_float_written_with_an_exponent_and_no_dot_is_a_float(tmp_path):
    preset = tmp_path / "lr.yaml"  # YAML 1.1 reads `1e-4` as a string; users write it so
    preset.write_text("extends: " + str(PRESET_DIR / "simple.yaml") + "\ntrain:\n  learning_rate: 1e-4\n")
    assert load_config(preset).train.learning_rate == 1e-4
    assert load_config(PRESET_DIR / "simple.yaml", ["train.learning_rate=2E-5"]).train.learning_rate == 2e-5
    assert load_config(PRESET_DIR / "simple.yaml", ["model.base=1e5"]).model.base == "1e5"  # a string key stays one


def test_bad_override_names_the_key():
    with pytest.raises(InputError, match="'train.epochz'"):
        load_config(PRESET_DIR / "simple.yaml", ["train.epochz=2"])
    with pytest.raises(InputError, match="section.key=value"):
        load_config(PRESET_DIR / "simple.yaml", ["epochs"])


def test_out_of_range_values_are_refused():
    with pytest.raises(InputError, match="fewshot.k"):
        load_config(PRESET_DIR / "simple.yaml", ["fewshot.k=9"])
    with pytest.raises(InputError, match="train.per_device_batch_size"):
        load_config(PRESET_DIR / "simple.yaml", ["train.per_device_batch_size=0"])


@pytest.mark.parametrize("override, message", [
    ("train.learning_rate=-1", "key 'train.learning_rate' must be > 0, got -1.0"),
    ("train.learning_rate=0", "key 'train.learning_rate' must be > 0, got 0.0"),
    ("train.warmup_ratio=1", "key 'train.warmup_ratio' must be in [0, 1), got 1.0"),
    ("lora.dropout=-0.1", "key 'lora.dropout' must be in [0, 1), got -0.1"),
    ("train.epochs=0", "key 'train.epochs' must be > 0, got 0.0"),
    ("train.save_steps=0", "key 'train.save_steps' must be >= 1, got 0"),
    ("eval.batch_size=0", "key 'eval.batch_size' must be >= 1, got 0"),
    ("thresholds.safety=1.5", "key 'thresholds.safety' must be in [0, 1], got 1.5"),
    ("grades.references={cse: 2}", "key 'grades.references' must be in [0, 1], got 2"),
    ("data.gsm8k_limit=0", "key 'data.gsm8k_limit' must be >= 1, got 0"),
    ("sweep.last_n=4", "key 'sweep.last_n' (4) must be <= train.save_total_limit (3): only that many checkpoints"
                       " are kept"),
    ("fewshot.k=9", "key 'fewshot.k' must be between 0 and fewshot.pool_size (8), got 9"),
])
def test_each_range_rule_gives_one_line_naming_the_key_and_the_override_that_set_it(override, message):
    with pytest.raises(InputError) as err:
        load_config(PRESET_DIR / "simple.yaml", [override])
    assert str(err.value) == f"override '{override}': {message}"


def test_a_range_error_names_the_preset_file_that_set_the_value(tmp_path):
    (tmp_path / "base.yaml").write_text("extends: " + str(PRESET_DIR / "simple.yaml") + "\ntrain:\n  epochs: 0\n")
    (tmp_path / "child.yaml").write_text("extends: base.yaml\nfewshot:\n  k: 2\n")
    with pytest.raises(InputError) as err:
        load_config(tmp_path / "child.yaml")
    assert str(err.value) == f"{tmp_path / 'base.yaml'}: key 'train.epochs' must be > 0, got 0.0"
    # A later override of the same key takes the blame only for its own value.
    with pytest.raises(InputError, match=r"^override 'fewshot.k=12': key 'fewshot.k'"):
        load_config(tmp_path / "child.yaml", ["train.epochs=1", "fewshot.k=12"])


def test_every_numeric_key_has_a_documented_range():
    import typing

    from lib.pipeline.config import RANGES

    numeric = set()
    for name, section in typing.get_type_hints(Config).items():
        for key, hint in typing.get_type_hints(section).items():
            options = typing.get_args(hint) if typing.get_origin(hint) is not dict else ()
            options = options or (hint,)  # a plain type, a dict, or the members of a union
            if {int, float} & set(options) or any(typing.get_origin(option) is dict for option in options):
                numeric.add(f"{name}.{key}")
    assert numeric == set(RANGES)


def test_missing_preset_and_invalid_yaml_name_the_file(tmp_path):
    with pytest.raises(InputError, match="nope.yaml: preset not found"):
        load_config(tmp_path / "nope.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("train:\n  epochs: [1\n")
    with pytest.raises(InputError, match="broken.yaml:.*not valid YAML"):
        load_config(broken)


@pytest.mark.parametrize("name", ["demo", "simple-smoke", "run_2.b", "A1"])
def test_valid_run_names(name):
    assert validate_run_name(name) == name


@pytest.mark.parametrize("name", ["a/b", "..", "a..b", "../x", "", "-x", ".hidden", "a b"])
def test_run_names_with_slashes_dots_or_spaces_are_refused(name):
    with pytest.raises(InputError, match="run name"):
        validate_run_name(name)


def test_data_readme_names_every_file_a_stage_writes_under_data():
    """data/README.md says which stages write there: each preset's pool and refined file under data/."""
    readme = (PRESET_DIR.parent / "data" / "README.md").read_text()
    written = set()
    for preset in PRESET_DIR.glob("*.yaml"):
        config = load_config(preset)
        written |= {path for path in (config.fewshot.path, config.data.refined_train)
                    if path and path.startswith("data/") and not path.startswith("data/demo/")}
    assert written == {"data/fewshot_gsm8k_fixed.jsonl", "data/gsm8k_train_self-instruct.jsonl"}
    rows = {line.split("|")[1].strip(" `"): line for line in readme.splitlines() if line.startswith("| `")}
    assert "make prep_fewshot" in rows["fewshot_gsm8k_fixed.jsonl"]
    assert "make refine" in rows["gsm8k_train_self-instruct.jsonl"]
    assert "nothing here is modified" not in readme.lower()


def test_the_docs_key_table_is_generated_from_the_schema_and_current():
    from lib.pipeline.config import schema
    from lib.pipeline.config_docs import key_table

    table = key_table()
    assert (PRESET_DIR.parent / "docs" / "config.md").read_text() == table, "run `make config-docs`"
    assert all(f"| `{name}` |" in table for name in schema())
    assert "| `train.learning_rate` | float | `0.0002` | > 0 | peak learning rate |" in table


def test_every_key_is_declared_once_with_a_description_and_the_defaults_are_the_simple_presets():
    """The schema's defaults are what a preset that says nothing gets: the real presets' own values
    (simple.yaml restates them), thresholds aside (0: no baseline unless a preset sets one)."""
    import yaml

    from lib.pipeline.config import schema

    specs = schema()
    assert all(spec.doc and "\n" not in spec.doc for spec in specs.values())
    simple = yaml.safe_load((PRESET_DIR / "simple.yaml").read_text())
    differ = {f"{section}.{key}" for section, values in simple.items() if isinstance(values, dict)
              for key, value in values.items() if specs[f"{section}.{key}"].default != value}
    assert differ == {"thresholds.accuracy", "thresholds.safety"}
