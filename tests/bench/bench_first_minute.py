"""The first minute: a fresh clone's set-up and `make demo`, each stage's wall and import time, against
the figures measured before this work (docs/benchmarks.md, "The first minute").

    python tests/bench/bench_first_minute.py            # uv and pip side by side, then the demo
    python tests/bench/bench_first_minute.py --no-pip   # without pip's minute
    python tests/bench/bench_first_minute.py --no-import-times   # the demo's wall without -X importtime's cost

The clone is `git clone` of this repository's HEAD (commit first) in a temporary folder; package
caches (uv's, pip's, the fetched uv) are left as they are, warm after a first run. The demo runs once
with PYTHONPROFILEIMPORTTIME=1 unless told not to: each stage's import time is the sum of its
top-level imports' cumulative times (the stack loaded before the stage does anything).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import tempfile
import time
from pathlib import Path

from common import REPO

# Measured on this 2-core machine before the work (2026-12-04/05, fresh artifacts, pip), seconds.
BEFORE_VENV_PIP = 68.0
BEFORE_CHAIN = 133.0
BEFORE_TOTAL = 150.0  # fresh clone to the demo's PASS, quiet machine (2026-12-05)
BEFORE_STAGES = {"prep_fewshot": 0.3, "tokenize": 23.7, "train": 29.8, "infer_gsm8k": 17.1,
                 "infer_ailuminate": 23.1, "score_safety": 15.6, "summarize": 0.9}
DEMO_OUTPUTS = ("gsm8k_preds_demo.jsonl", "ailuminate_preds_demo.jsonl", "ailuminate_safety_demo.jsonl",
                "run_demo/adapter/adapter_model.safetensors")
STAGE_LINE = re.compile(r"-m stages\.(\w+) ")
IMPORT_LINE = re.compile(r"import time:\s+\d+ \|\s+(\d+) \|( +)\S")


def timed(command: list[str], cwd: Path, env: dict[str, str]) -> float:
    started = time.monotonic()
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return time.monotonic() - started


def installed_set(venv: Path) -> str:
    """`pip freeze` without the seed tools (uv seeds wheel where python -m venv does not)."""
    return subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "freeze", "--all", "--exclude", "pip",
                           "--exclude", "setuptools", "--exclude", "wheel"],
                          capture_output=True, text=True, check=True).stdout


def demo_by_stage(clone: Path, env: dict[str, str], import_times: bool) -> tuple[float, dict[str, list[float]]]:
    """`make demo`'s wall time and {stage: [wall s, import s]}, a stage's wall running from its command
    line to the next one's (Make's own work in between counts to the stage before)."""
    env = {**env, **({"PYTHONPROFILEIMPORTTIME": "1"} if import_times else {})}
    stages: dict[str, list[float]] = {}
    current = None
    started = time.monotonic()
    with subprocess.Popen(["make", "--no-print-directory", "demo"], cwd=clone, env=env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT) as make:
        for line in make.stdout:
            now = time.monotonic() - started
            stage = STAGE_LINE.search(line)
            if stage and stage.group(1) in BEFORE_STAGES:
                if current:
                    stages[current][0] = now - stages[current][0]
                current = stage.group(1)
                stages[current] = [now, 0.0]
            imported = IMPORT_LINE.search(line)
            if imported and current and len(imported.group(2)) == 1:  # top level: one space of indent
                stages[current][1] += int(imported.group(1)) / 1e6
    total = time.monotonic() - started
    if make.returncode != 0:
        raise SystemExit("make demo failed")
    stages[current][0] = total - stages[current][0]
    return total, stages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-pip", action="store_true", help="skip the venv made with pip (about a minute)")
    parser.add_argument("--no-import-times", action="store_true", help="run the demo without -X importtime")
    options = parser.parse_args()
    env = {key: value for key, value in os.environ.items() if key not in ("MAKEFLAGS", "VENV_READY", "VIRTUAL_ENV")}
    with tempfile.TemporaryDirectory() as scratch:
        clone = Path(scratch) / "clone"
        subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True)
        setup = {"uv": timed(["make", "venv", "INSTALLER=uv"], clone, env)}
        if not options.no_pip:
            setup["pip"] = timed(["make", "venv", "INSTALLER=pip", "VENV=.venv-pip"], clone, env)
            freezes = [installed_set(clone / venv) for venv in (".venv", ".venv-pip")]
        chain, stages = demo_by_stage(clone, env, not options.no_import_times)
        again = timed(["make", "demo"], clone, env)
        if "pip" in setup:  # the same demo from pip's venv: the same answers, verdicts and adapter
            timed(["make", "demo", "VENV=.venv-pip", "ARTIFACTS=artifacts-pip"], clone, env)
            same_outputs = all((clone / "artifacts" / name).read_bytes()
                               == (clone / "artifacts-pip" / name).read_bytes() for name in DEMO_OUTPUTS)

    print(f"\nfresh-clone set-up (make venv), s:   uv {setup['uv']:.1f}"
          + (f"   pip {setup['pip']:.1f}   uv/pip x{setup['uv'] / setup['pip']:.2f}"
             f"   same installed set: {freezes[0] == freezes[1]}" if "pip" in setup else "")
          + f"   (before: pip {BEFORE_VENV_PIP:.0f})")
    if "pip" in setup:
        print(f"make demo from pip's venv: the same {', '.join(DEMO_OUTPUTS)}: {same_outputs}")
    print(f"\n{'stage':<18}{'wall s':>8}{'import s':>10}{'before s':>10}{'x before':>10}")
    for stage, (wall, imports) in stages.items():
        before = BEFORE_STAGES[stage]
        print(f"{stage:<18}{wall:>8.1f}{imports:>10.1f}{before:>10.1f}{wall / before:>10.2f}")
    imports = sum(imported for _, imported in stages.values())
    total = setup["uv"] + chain
    print(f"{'make demo':<18}{chain:>8.1f}{imports:>10.1f}{BEFORE_CHAIN:>10.1f}{chain / BEFORE_CHAIN:>10.2f}")
    print(f"{'set-up + demo':<18}{total:>8.1f}{'':>10}{BEFORE_TOTAL:>10.1f}{total / BEFORE_TOTAL:>10.2f}"
          f"   (target 60 s{'; with -X importtime' if not options.no_import_times else ''})")
    print(f"{'make demo again':<18}{again:>8.2f}   (target < 1 s: nothing to redo)")


if __name__ == "__main__":
    main()
