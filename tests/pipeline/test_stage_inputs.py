"""The stage graph (lib/pipeline/stage_graph.py) and what Make knows of it (lib/pipeline/stage_inputs.py):
each stage's declared keys are what its script uses, its rule is generated from its row, and a new
row is all a new stage needs (its Make rule, its preflight checks, its params file)."""

import ast
import json
import textwrap
from pathlib import Path

import pytest

from lib.pipeline.config import RUNTIME_KEYS, schema
from lib.pipeline.stage_graph import STAGES, StageSpec, chain, stage_keys
from lib.pipeline.stage_inputs import REPO, lib_modules, make_rules, make_vars, stage_names


def _attribute_chain(node: ast.AST) -> list[str] | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    return [node.id, *reversed(parts)] if isinstance(node, ast.Name) else None


def config_reads(script: Path) -> set[str]:
    """The config keys a stage script uses, found in its source: `stage.config.<section>[.<key>]`,
    and names bound to the config or one of its sections (`config = stage.config`, `safety =
    stage.config.safety`, also in tuple assignments); a section used whole counts as the section.
    The check that the graph's declarations are complete (the runtime never scans)."""
    tree = ast.parse(script.read_text(), str(script))
    aliases: dict[str, list[str]] = {}
    alias_values = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign):
            pairs = [(node.targets[0], node.value)]
            if isinstance(node.targets[0], ast.Tuple) and isinstance(node.value, ast.Tuple):
                pairs = list(zip(node.targets[0].elts, node.value.elts))
            for target, value in pairs:
                chain_ = _attribute_chain(value)
                if isinstance(target, ast.Name) and chain_ and chain_[:2] == ["stage", "config"]:
                    aliases[target.id] = chain_[2:]
                    alias_values.add(id(value))
    inner = {id(node.value) for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
    reads = set()
    for node in ast.walk(tree):
        if not isinstance(node, (ast.Attribute, ast.Name)) or id(node) in inner | alias_values:
            continue
        chain_ = _attribute_chain(node)
        if not chain_:
            continue
        if chain_[:2] == ["stage", "config"]:
            path = chain_[2:]
        elif chain_[0] in aliases and not (isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store)):
            path = aliases[chain_[0]] + chain_[1:]
        else:
            continue
        if not path:
            raise ValueError(f"{script} uses the whole config (line {node.lineno}); pass sections or keys")
        reads.add(".".join(path[:2]))
    return {key for key in reads if key.split(".")[0] not in reads or "." not in key}


def covered(key: str, declared: tuple[str, ...]) -> bool:
    return key in declared or key.split(".")[0] in declared


@pytest.mark.parametrize("spec", STAGES, ids=[spec.name for spec in STAGES])
def test_each_stage_declares_every_key_its_script_uses_that_changes_its_output(spec):
    used = config_reads(REPO / "stages" / f"{spec.name}.py") - set(RUNTIME_KEYS)  # runtime keys change nothing
    assert {key for key in used if not covered(key, spec.reads)} == set(), spec.name


@pytest.mark.parametrize("spec", STAGES, ids=[spec.name for spec in STAGES])
def test_each_stages_keys_are_declared_keys_or_sections_in_the_schemas_order(spec):
    declared = list(schema())
    sections = {name.split(".")[0] for name in declared}
    keys = stage_keys(spec.name)
    assert keys and all(key in declared or key in sections for key in keys), keys  # a typo'd key fails here
    assert not set(keys) & set(RUNTIME_KEYS)
    first = [declared.index(key) if "." in key else min(i for i, name in enumerate(declared)
                                                         if name.startswith(key + ".")) for key in keys]
    assert first == sorted(first)


def test_batch_and_chunk_sizes_change_no_output_so_no_stage_reruns_for_them():
    for key in ("eval.batch_size", "eval.chunk_size", "safety.batch_size", "refine.batch_size", "refine.chunk_size"):
        assert key in RUNTIME_KEYS, key
    assert "eval" in stage_keys("infer_gsm8k")  # the section is read; its runtime keys leave the params file


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


def test_the_chain_is_the_graphs_stages_in_order_without_the_ones_asked_for_by_name():
    assert chain() == ["prep_fewshot", "tokenize", "train", "infer_gsm8k", "infer_ailuminate", "score_safety",
                       "summarize"]


def test_make_vars_name_every_stage_and_follow_lazy_imports():
    lines = dict(line.split(" := ") for line in make_vars().splitlines())
    assert lines["STAGE_GOALS"].split() == [spec.name for spec in STAGES]
    assert {name for name in lines if name.startswith("LIB_")} == {f"LIB_{name.upper()}" for name in stage_names()}
    # lib/evaluation.py imports the engine (and through it lib.models) inside evaluate: still a prerequisite
    assert "lib/models.py" in lines["LIB_INFER_AILUMINATE"].split()
    assert "lib/training/trainer.py" not in lines["LIB_INFER_AILUMINATE"].split()
    assert lines["LIB_TRAIN"].split() == lib_modules("train")


DUMMY = StageSpec("dummy", "a stage added by a row", lambda run, config: run.folder / "dummy.json",
                  reads=("fewshot.k", "eval.batch_size"), after=("prep_fewshot", "train"), launch=True,
                  checks=("gsm8k_test",))


def test_a_stage_added_to_the_graph_gets_its_make_rule_preflight_checks_and_params_file(tmp_path, monkeypatch):
    """One row, nothing else edited: the generated Make rule, the preflight's stages and checks, the params."""
    import lib.pipeline.stage_graph as graph
    from lib.checks.preflight import problems, stages_to_run
    from lib.pipeline.artifacts import RunPaths
    from lib.pipeline.params import write_params
    from lib.pipeline.presets import load_config

    monkeypatch.setattr(graph, "STAGES", (*graph.STAGES, DUMMY))  # the one table: nothing else is touched

    rules = make_rules().splitlines()
    at = rules.index("dummy: $(RUN_DIR)/dummy.json ## a stage added by a row")
    assert rules[at + 1] == ("$(RUN_DIR)/dummy.json: stages/dummy.py $(LIB_DUMMY) $(PARAMS)/dummy.json"
                             " $(RUN_DIR)/fewshot.jsonl $(ADAPTER)")
    assert rules[at + 2] == "\t$(LAUNCH) stages.dummy $(RUN_ARGS)"

    missing = tmp_path / "no-test.jsonl"
    config = load_config(REPO / "presets" / "demo.yaml", [f"data.gsm8k_test={missing}"])
    run = RunPaths(tmp_path, "d")
    assert stages_to_run(["dummy"], config, run) == ["prep_fewshot", "tokenize", "train", "dummy"]
    (line,) = [line for line in problems(config, ["dummy"]) if str(missing) in line]
    assert "file not found" in line

    write_params(config, tmp_path / "params")
    assert json.loads((tmp_path / "params" / "dummy.json").read_text())["params"] == {"fewshot.k": 3}


def test_a_rule_names_the_upstream_outputs_the_artifact_map_names():
    """summarize waits for the evaluations' files; an evaluation per checkpoint for the same checkpoint's."""
    rules = make_rules()
    assert ("$(ARTIFACTS)/ailuminate_safety_$(RUN)_%.jsonl: stages/score_safety.py $(LIB_SCORE_SAFETY)"
            " $(PARAMS)/score_safety.json $(ARTIFACTS)/ailuminate_preds_$(RUN)_%.jsonl") in rules
    assert "| sweep" in next(line for line in rules.splitlines() if line.startswith("$(RUN_DIR)/summary.json:"))
