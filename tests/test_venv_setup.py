"""`make venv`: uv gets pip's configuration and pip's version choice, venv options go to pip, a wrong
INSTALLER stops in one line, and (slow, needs the registry) uv and pip would install the same set."""

import os
import re
import shlex
import subprocess
import sys

import pytest

from lib.venv_setup import (
    Installer,
    SetupError,
    choose_installer,
    fetch_uv,
    install_commands,
    pip_options,
    planned_set,
    uv_environment,
)
from tests.helpers import REPO

PIP_CONFIG = """global.find-links='/opt/wheels'
global.extra-index-url='file:///opt/a/simple file:///opt/b/simple'
global.constraint='/etc/pip/constraints.txt'
install.find-links='/srv/install-wheels'
:env:.find-links='/srv/env-wheels /srv/more-wheels'
:env:.no-index='true'
site.index-url='https://not-a-scope-pip-reads/'
"""


def test_pip_options_take_the_latest_scope_global_then_install_then_environment():
    options = pip_options(PIP_CONFIG)
    assert options["find-links"] == "/srv/env-wheels /srv/more-wheels"
    assert options["extra-index-url"] == "file:///opt/a/simple file:///opt/b/simple"
    assert "index-url" not in options


def test_uv_gets_pips_indexes_wheels_and_constraints_and_its_best_version_rule():
    environment = uv_environment(pip_options(PIP_CONFIG), {})
    assert environment["UV_FIND_LINKS"] == "/srv/env-wheels,/srv/more-wheels"
    assert environment["UV_INDEX"] == "file:///opt/a/simple file:///opt/b/simple"
    assert environment["UV_CONSTRAINT"] == "/etc/pip/constraints.txt"
    assert environment["UV_NO_INDEX"] == "1"
    # uv's default takes a package from the first index that has it; pip takes the best version of all.
    assert environment["UV_INDEX_STRATEGY"] == "unsafe-best-match"


def test_a_uv_variable_the_user_set_is_kept_as_set():
    mine = {"UV_FIND_LINKS": "/mine", "UV_INDEX_STRATEGY": "first-index"}
    environment = uv_environment(pip_options(PIP_CONFIG), mine)
    assert environment["UV_FIND_LINKS"] == "/mine" and environment["UV_INDEX_STRATEGY"] == "first-index"


def test_venv_options_make_auto_choose_pip_and_uv_refuse_them():
    # uv would not see what --system-site-packages provides (the Docker image's CUDA torch) and reinstall it.
    chosen = choose_installer("auto", sys.executable, ["--system-site-packages"])
    assert chosen.name == "pip" and "--system-site-packages" in chosen.why
    with pytest.raises(SetupError, match="INSTALLER=pip"):
        choose_installer("uv", sys.executable, ["--system-site-packages"])
    commands = install_commands(chosen, "/usr/bin/python3", "/tmp/v", ["--system-site-packages"])
    assert commands[0] == ["/usr/bin/python3", "-m", "venv", "--system-site-packages", "/tmp/v"]
    assert commands[-1][-3:] == ["--no-deps", "-r", "requirements-nodeps.txt"]


def test_uv_seeds_pip_into_the_venv_and_updates_an_existing_one_in_place():
    commands = install_commands(Installer("uv", "/bin/uv"), "/usr/bin/python3", "/tmp/v", [])
    assert {"--seed", "--allow-existing"} <= set(commands[0])
    assert [command[-2:] for command in commands[1:]] == [["-r", "requirements.txt"],
                                                          ["-r", "requirements-nodeps.txt"]]
    assert "--no-deps" in commands[2] and "--no-deps" not in commands[1]


@pytest.mark.parametrize("writes_bytecode", [True, False])
def test_uv_compiles_bytecode_at_install_only_where_python_writes_none_itself(writes_bytecode):
    env = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}
    if not writes_bytecode:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    install = subprocess.run([sys.executable, "-c", "from lib.venv_setup import Installer, install_commands;"
                              " print(*install_commands(Installer('uv', 'uv'), 'python3', 'v', [])[1])"],
                             cwd=REPO, env=env, capture_output=True, text=True, check=True).stdout.split()
    assert install[:3] == ["uv", "pip", "install"]
    assert ("--compile-bytecode" in install) == (not writes_bytecode)


def make_venv(tmp_path, *args):
    env = {key: value for key, value in os.environ.items() if key != "MAKEFLAGS"}
    env["VENV_READY"] = "0"  # the suite's is 1 (tests/conftest.py): this venv is the one made
    return subprocess.run(["make", "--no-print-directory", "venv", f"VENV={tmp_path / 'v'}", *args], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=60)


def test_make_venv_with_an_unknown_installer_stops_in_one_line_and_leaves_no_stamp(tmp_path):
    done = make_venv(tmp_path, "INSTALLER=conda")
    assert done.returncode != 0
    stop = r"Makefile:\d+: \*\*\* INSTALLER=conda: one of auto, uv or pip \(e.g. INSTALLER=pip\)\.  Stop\."
    assert re.fullmatch(stop, done.stderr.strip())
    assert not (tmp_path / "v" / ".installed").exists()


def test_make_venv_passes_venv_args_as_typed_and_uv_refuses_them_in_one_line(tmp_path):
    typed = '--system-site-packages --prompt "my env"'
    planned = subprocess.run(["make", "-n", "--no-print-directory", "venv", f"VENV={tmp_path / 'v'}",
                              f"VENV_ARGS={typed}", "VENV_READY=0"],
                             cwd=REPO, capture_output=True, text=True, check=True).stdout
    words = shlex.split(next(line for line in planned.replace("\\\n", "").splitlines() if "stages.setup_venv" in line))
    assert words[words.index("--venv-args") + 1] == typed
    done = make_venv(tmp_path, "INSTALLER=uv", f"VENV_ARGS={typed}")
    assert done.returncode != 0
    assert [line for line in done.stderr.splitlines() if line.startswith("venv:")] == [
        f"venv: INSTALLER=uv with VENV_ARGS={' '.join(shlex.split(typed))}: those are `python -m venv` options;"
        " use INSTALLER=pip (or auto)"]


@pytest.mark.slow
def test_uv_and_pip_would_install_the_same_set_today(monkeypatch):
    """Both resolve requirements.txt and requirements-nodeps.txt now (the registry and pip's configuration
    of this machine), installing nothing; ~20 s, most of it pip's."""
    monkeypatch.chdir(REPO)
    try:
        uv = Installer("uv", fetch_uv(sys.executable))
    except SetupError as error:
        pytest.skip(f"uv cannot be had here: {error}")
    by_uv = planned_set(uv, sys.executable)
    by_pip = planned_set(Installer("pip"), sys.executable)
    assert by_uv == by_pip
    assert any(line.startswith("torch==2.13.0") for line in by_uv) and len(by_uv) > 20
