"""lib/'s import graph: no cycle between modules, and no layer importing one above it; and what a
command loads: no torch for --help, the preflight or the summary.

The layers, lowest first: what each may import is everything before it. Lazy imports inside
functions count (they run too). A new module belongs to the layer its package or name says.
"""

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

from lib.pipeline.stage_inputs import REPO

LAYERS = [
    "lib.errors", "lib.console",  # plain Python: errors, the console's help, quiet and last lines
    "lib.venv_setup",  # standard library and lib.console only: it runs before the venv exists
    "lib.io",  # plain Python: files
    "lib.pipeline",  # the config, run identity, artifact map, stage inputs, fingerprints, CLI (no ML libraries)
    "lib.hub", "lib.devices", "lib.embedded", "lib.models", "lib.chat",  # hub, devices, models, chat templates
    "lib.tasks",  # GSM8K and AILuminate data, parsing, few-shot pool, prompts
    "lib.engine",  # generation
    "lib.evaluation",  # an evaluation's target, files, fingerprint, resume and writing (generates through the engine)
    "lib.judge",  # the safety judge (runs the engine)
    "lib.training",  # the trainer, SFT data, rejection sampling
    "lib.results",  # summaries, reports, sweep, comparison, statistics
    "lib.checks",  # the GPU check's parts and models (runs every stage)
]


def lib_modules() -> dict[str, Path]:
    modules = {}
    for path in (REPO / "lib").rglob("*.py"):
        parts = path.relative_to(REPO).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def imported(path: Path) -> list[tuple[str, list[str]]]:
    """Every absolute import in `path`, lazy ones inside functions included: (module, names taken from
    it), names empty for `import module`."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.module, [alias.name for alias in node.names]))
        elif isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names]
    return found


def imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """The lib modules `path` imports (`from lib.a import b` is lib.a.b when that is a module)."""
    found = set()
    for module, names in imported(path):
        if module == "lib" or module.startswith("lib."):
            found |= {f"{module}.{name}" if f"{module}.{name}" in modules else module for name in names} or {module}
    return found


def layer(module: str) -> int:
    matches = [i for i, name in enumerate(LAYERS) if module == name or module.startswith(name + ".")]
    assert matches, f"{module} is in no layer: add it to LAYERS"
    return matches[0]


def graph() -> dict[str, set[str]]:
    modules = lib_modules()
    return {name: imports(path, modules) - {name, "lib"} for name, path in modules.items()}


def upward_imports(edges: dict[str, set[str]]) -> list[str]:
    return [f"{source} imports {target}" for source, targets in sorted(edges.items()) if source != "lib"
            for target in sorted(targets) if layer(target) > layer(source)]


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    visiting, done, found = [], set(), []

    def visit(module: str) -> None:
        if module in done:
            return
        if module in visiting:
            found.append(visiting[visiting.index(module):] + [module])
            return
        visiting.append(module)
        for target in sorted(edges.get(module, ())):
            visit(target)
        visiting.pop()
        done.add(module)

    for module in sorted(edges):
        visit(module)
    return found


def test_every_module_has_a_layer_and_imports_only_its_own_or_lower_ones():
    assert upward_imports(graph()) == []


def test_no_import_cycle_between_modules():
    assert cycles(graph()) == []


def test_the_checks_find_an_upward_import_and_a_cycle():
    edges = {"lib.pipeline.run": {"lib.engine.resumable"}, "lib.engine.resumable": {"lib.pipeline.run"}}
    assert upward_imports(edges) == ["lib.pipeline.run imports lib.engine.resumable"]
    assert cycles(edges) == [["lib.engine.resumable", "lib.pipeline.run", "lib.engine.resumable"]]
    modules = lib_modules()  # and the parser sees the real imports, lazy ones included
    assert "lib.judge.formats" in imports(modules["lib.results.compare"], modules)
    assert "lib.engine.resumable" in imports(modules["lib.judge.scoring"], modules)  # inside a function


def test_importing_lib_installs_no_console_filter_and_the_stages_package_does():
    """lib/ modules run nothing on import; the commands' package quiets the upstream messages first."""
    import subprocess
    import sys

    probe = ("import logging, sys, warnings; import {module}; "
             "ours = [f for f in warnings.filters if f[1] is not None and 'gradient_checkpointing' in f[1].pattern]; "
             "print(bool(ours), bool(logging.getLogger('bitsandbytes.backends.cpu.ops').filters))")

    def installed(module):
        done = subprocess.run([sys.executable, "-c", probe.format(module=module)], cwd=REPO, capture_output=True,
                              text=True, check=True)
        return done.stdout.split()

    assert installed("lib, lib.console, lib.pipeline.cli, lib.models") == ["False", "False"]
    assert installed("stages") == ["True", "True"]


# What a command that only reads JSON and config must not load (torch alone is ~1.5 s, the stack 4-6 s).
ML_STACK = {"torch", "transformers", "peft", "bitsandbytes", "accelerate"}


def loaded_packages(importtime_log: str) -> set[str]:
    """Top-level package names in `python -X importtime` output (every process it covers)."""
    lines = re.finditer(r"^import time:.*\| +([\w.]+)$", importtime_log, re.M)
    return {line.group(1).split(".")[0] for line in lines}


def third_party_imports(path: Path) -> set[str]:
    """Top-level names of the non-lib packages `path` imports, lazy imports inside functions included."""
    return {module.split(".")[0] for module, _ in imported(path)} - {"lib", "stages"}


def test_no_command_loads_the_ml_stack_for_its_help():
    """`python -m stages.<name> --help` for every command, in one process per command as a user types it."""
    env = {**os.environ, "PYTHONPROFILEIMPORTTIME": "1"}
    loading = {}
    for script in sorted((REPO / "stages").glob("*.py")):
        if script.stem == "__init__":
            continue
        done = subprocess.run([sys.executable, "-m", f"stages.{script.stem}", "--help"], cwd=REPO, env=env,
                              capture_output=True, text=True)
        assert done.returncode == 0 and "usage: python -m stages." in done.stdout.lower(), done.stderr[-2000:]
        loading[script.stem] = sorted(loaded_packages(done.stderr) & ML_STACK)
    assert {name: stack for name, stack in loading.items() if stack} == {}


def test_the_summary_never_imports_the_ml_stack_on_any_path():
    """stages/summarize.py and every lib module it can reach, lazy imports included: the summary reads
    metrics JSON and draws plots, so no path through it may load torch."""
    modules = lib_modules()
    reached, frontier = set(), imports(REPO / "stages" / "summarize.py", modules)
    while frontier:
        module = frontier.pop()
        reached.add(module)
        frontier |= imports(modules[module], modules) - reached - {"lib"}
    stack = {module: sorted(third_party_imports(modules[module]) & ML_STACK) for module in sorted(reached)}
    assert "lib.results.summary" in reached and {module: s for module, s in stack.items() if s} == {}
    assert third_party_imports(modules["lib.models"]) & ML_STACK  # the check itself sees an import of torch


def test_make_check_for_the_demo_loads_no_torch(tmp_path):
    env = {key: value for key, value in os.environ.items() if key != "MAKEFLAGS"}
    env["PYTHONPROFILEIMPORTTIME"] = "1"
    done = subprocess.run(["make", "--no-print-directory", "check", "PRESET=demo", f"ARTIFACTS={tmp_path / 'a'}"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "are usable" in done.stdout
    packages = loaded_packages(done.stderr)
    assert "click" in packages and not packages & ML_STACK
