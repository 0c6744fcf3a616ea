"""What Make knows of each stage, generated: its rule (from the stage graph, lib/pipeline/stage_graph.py)
and the lib/ code it runs (its LIB_<STAGE> prerequisites, found by following its imports).

`python -m lib.pipeline.stage_inputs make-rules` prints both; the Makefile includes the result
(.make/stages.mk) and regenerates it when code changes. A stage's rule: its target (the file the
graph names), its prerequisites (its script, its lib/ code, its params file, what it reads of other
stages), its command (through accelerate for several processes where it is launched), and for an
evaluation the sweep's pattern rule per checkpoint.

Standard library only: the Makefile runs this with the system Python, before any venv exists.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

from lib.pipeline.artifacts import RunPaths
from lib.pipeline.stage_graph import StageSpec, stage, stages

REPO = Path(__file__).resolve().parents[2]


def stage_names() -> list[str]:
    """Every command script in stages/ (the stages of the graph and the helpers a user types)."""
    return sorted(p.stem for p in (REPO / "stages").glob("*.py") if p.stem != "__init__")


def _imported_lib_modules(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):  # lazy imports inside functions count too
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("lib."):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("lib.")}
    return found


def module_file(module: str) -> Path:
    """The file a dotted lib module runs from: lib/a/b.py, or lib/a/__init__.py for a package."""
    path = REPO / module.replace(".", "/")
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def lib_modules(stage: str) -> list[str]:
    """The lib/ files a stage script runs: its lib imports, theirs, and so on, with the packages'
    __init__.py files (they run on import too); paths from the repo root."""
    seen: set[str] = set()
    pending = list(_imported_lib_modules(REPO / "stages" / f"{stage}.py"))
    while pending:
        module = pending.pop()
        if module not in seen:
            seen.add(module)
            parts = module.split(".")
            pending += [".".join(parts[:i]) for i in range(2, len(parts))]  # the packages it sits in
            pending += _imported_lib_modules(module_file(module))
    return sorted({"lib/__init__.py"} | {str(module_file(m).relative_to(REPO)) for m in seen})


def make_vars() -> str:
    """The Makefile's STAGE_GOALS (the stages of the graph) and LIB_<STAGE> (for every script in stages/)."""
    return f"STAGE_GOALS := {' '.join(spec.name for spec in stages())}\n" + "".join(
        f"LIB_{name.upper()} := {' '.join(lib_modules(name))}\n" for name in stage_names())


# Placeholders a run's paths are formed with, then replaced by Make's variables.
_ROOT, _RUN = "ARTIFACTSROOT", "RUNNAME"


def _target(path: Path) -> str:
    return str(path).replace(f"{_ROOT}/run_{_RUN}", "$(RUN_DIR)").replace(_ROOT, "$(ARTIFACTS)").replace(
        _RUN, "$(RUN)")


def make_rules() -> str:
    """The Makefile's stage rules from the graph: per stage `<name>: <target> ## help`,
    the target's rule and command, and an evaluation's per-checkpoint pattern rule (tag _%, kept by
    .PRECIOUS: Make would delete a pattern rule's intermediate files)."""
    run = RunPaths(Path(_ROOT), _RUN)
    lines, kept = [], []
    for spec in stages():
        if not spec.make_rule:  # a command the user asks for: it runs whenever named (the Makefile says when else)
            after = " ".join(_target(stage(name).output(run, None)) for name in spec.after)
            lines += [f"{spec.name}: {after} ## {spec.help}", "\t" + " ".join(_command(spec))]
            continue
        output = _target(spec.output(run, None))
        lines += [f"{spec.name}: {output} ## {spec.help}", *_rule(spec, output, run, tag="")]
        if spec.per_checkpoint:
            tagged = _target(run.evaluation(spec.name, "preds", "_%"))
            lines += _rule(spec, tagged, run, tag="_%")
            kept.append(tagged)
    if kept:
        lines.append(f".PRECIOUS: {' '.join(kept)}")
    return "\n".join(lines) + "\n"


def _rule(spec: StageSpec, output: str, run: RunPaths, tag: str) -> list[str]:
    """The rule making `output`: for a checkpoint (tag _%) its upstream evaluations tagged alike."""
    prerequisites = [f"stages/{spec.name}.py", f"$(LIB_{spec.name.upper()})", f"$(PARAMS)/{spec.name}.json"]
    for name in spec.after:
        upstream = stage(name)
        if name == "train":  # the finished adapter, $(ADAPTER): nothing in a base run
            prerequisites.append("$(ADAPTER)")
        elif tag and upstream.per_checkpoint:  # the same checkpoint's evaluation
            prerequisites.append(_target(run.evaluation(name, "preds", tag)))
        elif upstream.output(run, None) is not None:  # else the config names it: $(REFINED_TRAIN), the Makefile's
            prerequisites.append(_target(upstream.output(run, None)))
    prerequisites += [f"$(wildcard {_target(stage(name).output(run, None))})" for name in spec.after_if_present]
    order_only = f" | {' '.join(spec.order_only)}" if spec.order_only else ""
    command = _command(spec) + (["--checkpoint $*"] if tag else [])
    return [f"{output}: {' '.join(prerequisites)}{order_only}", "\t" + " ".join(command)]


def _command(spec: StageSpec) -> list[str]:
    """The stage's command line: through accelerate for several processes where it is launched."""
    command = ["$(LAUNCH)" if spec.launch else "$(PY) -m", f"stages.{spec.name}", "$(RUN_ARGS)"]
    return command + ([spec.extra_args] if spec.extra_args else [])


if __name__ == "__main__":
    # Two files: the variables Make needs before it reads the run's make.mk (the goals that are stages,
    # each stage's lib/ modules), and the rules, whose prerequisites it expands as it reads them (after).
    if sys.argv[1:] not in (["make-vars"], ["make-rules"]):
        sys.exit("usage: python -m lib.pipeline.stage_inputs make-vars | make-rules")
    sys.stdout.write(make_vars() if sys.argv[1] == "make-vars" else make_rules())
