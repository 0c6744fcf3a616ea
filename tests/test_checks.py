"""The GPU check's parts: each row is on disk the moment its step ends, a step past the budget is
killed and marked, and without CUDA a part stops in one line (the chain itself: tests/e2e)."""

import subprocess
import sys
import time

import lib.checks.gpu as gpu
from tests.helpers import REPO


def test_each_row_is_written_when_its_step_ends_and_a_step_past_the_budget_is_killed(tmp_path, monkeypatch):
    def steps(part, work, bundle, card, tiny):
        quick = gpu.Step("quick", "quick", [sys.executable, "-c", "print('measured 42')"], 60, gpu._exit_only)
        slow = gpu.Step("slow", "slow", [sys.executable, "-c", "print('started', flush=True); import time;"
                                         " time.sleep(120)"], 60, gpu._exit_only)
        never = gpu.Step("never", "never", [sys.executable, "-c", "pass"], 60, gpu._exit_only)
        return [quick, slow, never]

    monkeypatch.setattr(gpu, "steps", steps)
    start = time.monotonic()
    passed = gpu.run_part("part1", tmp_path / "out", tmp_path / "work", tmp_path, "h100", budget=15, echo=lambda _: 0)
    assert not passed and time.monotonic() - start < 60
    rows = (tmp_path / "out" / gpu.TABLE).read_text().splitlines()[2:]
    assert rows[0].startswith("| part1 | quick | PASS |") and rows[0].endswith("| measured 42 |")
    assert rows[1].startswith("| part1 | slow | FAIL |") and rows[1].endswith("| killed: out of time |")
    assert rows[2].endswith("| not run: the part's 15 s budget is spent |")
    assert (tmp_path / "out" / "slow.txt").read_text() == "started\n"  # the killed step's log kept


def test_a_part_without_cuda_stops_in_one_line_before_writing_anything(tmp_path):
    import pytest
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is here: the part would run")
    done = subprocess.run([sys.executable, "-m", "stages.gpu_check", "part1", "--out", str(tmp_path / "out")],
                          cwd=REPO, capture_output=True, text=True)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("Error: gpu-check needs CUDA: torch.cuda.is_available() is False")
    assert not (tmp_path / "out").exists()
