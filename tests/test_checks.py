"""The GPU check's parts: each installs the bundle on a fresh machine and runs with it first on the
path, each row is on disk the moment its step ends, a step past the budget is killed and marked, the
parts fit the loan, and without CUDA a part stops in one line (the chain itself: tests/e2e)."""

import subprocess
import sys
import time
import zipfile

import lib.checks.gpu as gpu
from lib.checks.bundle import INSTALLED
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
    done = subprocess.run([sys.executable, "-m", "stages.gpu_check", "part1", "--out", str(tmp_path / "out"),
                           "--site", str(tmp_path / "site"), "--bundle", str(tmp_path / "bundle")],
                          cwd=REPO, capture_output=True, text=True)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("Error: gpu-check needs CUDA: torch.cuda.is_available() is False")
    assert not (tmp_path / "out").exists()


def write_wheel(folder, name: str, version: str, value: str):
    """A pure-Python wheel of one module whose VALUE is `value` (what pip installs from a bundle)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}-{version}-py3-none-any.whl"
    info = f"{name}-{version}.dist-info"
    files = {f"{name}.py": f"VALUE = {value!r}\n",
             f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
             f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    files[f"{info}/RECORD"] = "".join(f"{name},,\n" for name in [*files, f"{info}/RECORD"])
    with zipfile.ZipFile(path, "w") as wheel:
        for member, text in files.items():
            wheel.writestr(member, text)
    return path


def test_a_part_installs_the_bundle_where_absent_and_runs_with_the_carried_packages_first(tmp_path):
    """A fresh machine: the site folder is made from the bundle's wheels and the command runs again with
    it first on the path, so a carried module wins over the image's own (here on PYTHONPATH already);
    a second command finds the site complete and installs nothing; a changed bundle is installed again."""
    bundle, site, image = tmp_path / "bundle", tmp_path / "site", tmp_path / "image"
    write_wheel(bundle / "wheels", "gsm8k_probe", "2.0", "carried")
    (image / "gsm8k_probe.py").parent.mkdir()
    (image / "gsm8k_probe.py").write_text("VALUE = 'image'\n")
    code = (f"from pathlib import Path; from lib.checks.bundle import run_with_bundle;"
            f" run_with_bundle(Path({str(bundle)!r}), Path({str(site)!r}));"
            " import gsm8k_probe, os; print(gsm8k_probe.VALUE, os.getpid())")

    def command():
        done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                              env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(image)})
        assert done.returncode == 0, done.stderr
        return done.stdout

    first = command()
    assert "1 wheel(s) of" in first and first.splitlines()[-1].startswith("carried ")
    assert (site / INSTALLED).read_text() == "gsm8k_probe-2.0-py3-none-any.whl\n"
    assert not (tmp_path / "site.partial").exists()
    again = command()
    assert "installed into" not in again and again.startswith("carried ")
    write_wheel(bundle / "wheels", "gsm8k_other", "1.0", "x")
    assert "2 wheel(s) of" in command()


def test_the_parts_budgets_fit_a_15_minute_loan_with_two_machine_starts():
    """docs/machines.md: a start takes up to 2.5 minutes; parts 1 and 2 on two machines must fit 15."""
    assert 2 * 150 + 2 * gpu.BUDGET <= 15 * 60
    for part in ("part1", "part2", "part3"):
        planned = gpu.steps(part, REPO / "work", REPO / "bundle", "h100", tiny=False)
        assert [step.log for step in planned[:2]] == ["environment", "model"]  # a fresh machine builds the model
        assert all(step.timeout <= gpu.BUDGET for step in planned)
    bench = " ".join(gpu.steps("part1", REPO, REPO, "h100", False)[-1].command)
    assert "--presets simple" in bench and "medium" not in bench  # the other presets' decoding is part 3
