"""What each stage depends on, in one place: the config keys it reads and the lib/ code it runs.

- Config keys: the stage script is the declaration. `config_reads` finds every
  `config.<section>[.<key>]` it uses (a section passed whole to lib/ is read whole) and
  `stage_keys` orders them as lib/pipeline/config.py declares them; lib/pipeline/run.py writes that
  slice to run_<run>/params/<stage>.json, a Make prerequisite, so changing a key reruns exactly the
  stages that read it.
- lib/ modules: the stage's import statements are the declaration (`lib_modules` follows them
  through lib/, lazy imports included); `python -m lib.pipeline.stage_inputs make-vars` prints them as the
  Makefile's LIB_<STAGE> variables, which the Makefile includes and regenerates when code changes.

Standard library only: the Makefile runs this with the system Python, before any venv exists.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

from lib.pipeline import config

REPO = Path(__file__).resolve().parents[2]

# Keys a stage reads that never change what it writes (how long a process waits for the others,
# where the training curves are also sent), declared `runtime` in lib/pipeline/config.py: they are not
# in params/<stage>.json or the training fingerprint and need no RECONFIGURE, so changing one reruns nothing.
RUNTIME_KEYS = config.RUNTIME_KEYS


def without_runtime_keys(values: dict) -> dict:
    """`values` ({section: {key: value}} or {dotted key: value}) without the runtime keys."""
    kept = {}
    for name, value in values.items():
        if name in RUNTIME_KEYS:
            continue
        if isinstance(value, dict):
            value = {key: item for key, item in value.items() if f"{name}.{key}" not in RUNTIME_KEYS}
        kept[name] = value
    return kept


def stage_names() -> list[str]:
    return sorted(p.stem for p in (REPO / "stages").glob("*.py") if p.stem != "__init__")


def param_stages() -> list[str]:
    """The stages that resolve a run's config (`@stage_command`): each gets run_<run>/params/<stage>.json."""
    return [name for name in stage_names() if "@stage_command" in (REPO / "stages" / f"{name}.py").read_text()]


def stage_keys(stage: str) -> tuple[str, ...]:
    """What `stage` reads, from its script (`config_reads`), runtime keys left out, in the order the
    schema declares them (a section read whole at its place): the keys of its params file, so a
    change elsewhere does not rerun it."""
    order = list(config.schema())

    def place(name: str) -> int:
        return order.index(name) if "." in name else next(i for i, key in enumerate(order)
                                                           if key.startswith(name + "."))

    return tuple(sorted(config_reads(REPO / "stages" / f"{stage}.py") - set(RUNTIME_KEYS), key=place))


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


def _attribute_chain(node: ast.AST) -> list[str] | None:
    """`a.b.c` as ["a", "b", "c"]; None when the chain does not start at a plain name."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    return [node.id, *reversed(parts)]


def config_reads(script: Path) -> set[str]:
    """The config keys a stage script reads, as dotted keys (a section used whole: its name).

    The config is `stage.config`; names bound to it (`config = stage.config`) or to one of its
    sections (`safety = stage.config.safety`, also in tuple assignments) are followed."""
    tree = ast.parse(script.read_text(), str(script))
    aliases: dict[str, list[str]] = {}  # name -> config path it holds ([] = the whole config)
    alias_values = set()  # `stage.config...` on the right of an alias assignment: a name, not a read
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign):
            pairs = [(node.targets[0], node.value)]
            if isinstance(node.targets[0], ast.Tuple) and isinstance(node.value, ast.Tuple):
                pairs = list(zip(node.targets[0].elts, node.value.elts))
            for target, value in pairs:
                chain = _attribute_chain(value)
                if isinstance(target, ast.Name) and chain and chain[:2] == ["stage", "config"]:
                    aliases[target.id] = chain[2:]
                    alias_values.add(id(value))
    inner = {id(node.value) for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
    reads = set()
    for node in ast.walk(tree):
        if not isinstance(node, (ast.Attribute, ast.Name)) or id(node) in inner | alias_values:
            continue
        chain = _attribute_chain(node)
        if not chain:
            continue
        if chain[:2] == ["stage", "config"]:
            path = chain[2:]
        elif chain[0] in aliases and not (isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store)):
            path = aliases[chain[0]] + chain[1:]
        else:
            continue
        if not path:
            raise ValueError(f"{script} uses the whole config (line {node.lineno}); pass sections or keys")
        reads.add(".".join(path[:2]))
    return {key for key in reads if key.split(".")[0] not in reads or "." not in key}


def make_vars() -> str:
    """The Makefile's LIB_<STAGE> variables."""
    return "".join(f"LIB_{stage.upper()} := {' '.join(lib_modules(stage))}\n" for stage in stage_names())


if __name__ == "__main__":
    if sys.argv[1:] != ["make-vars"]:
        sys.exit("usage: python -m lib.pipeline.stage_inputs make-vars")
    sys.stdout.write(make_vars())
