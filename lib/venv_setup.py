"""The project's venv, made by uv where uv is on PATH or installable from the registry, by pip otherwise,
with one installed set either way. Plain Python (standard library only): it runs before the venv that
holds everything else exists (lib/console.py, the one project module it uses, is plain Python too).

Same set: uv reads no pip configuration, so pip's own (`pip config list`: pip.conf files and PIP_*
variables; e.g. a mirror, a folder of local wheels, a constraints file) is handed to uv as its UV_*
equivalents, and uv picks the highest version across all indexes as pip does (unsafe-best-match;
uv's default takes the first index that has a package at all). Without that, uv on a machine whose
torch comes from a local CPU wheel resolves the CUDA build from PyPI instead (3 GB more).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from lib.console import last_line

UV_REQUIREMENT = "uv==0.13.9"  # the uv fetched when none is on PATH (one version: one resolver)
REQUIREMENTS = "requirements.txt"
NO_DEPS_REQUIREMENTS = "requirements-nodeps.txt"  # installed after REQUIREMENTS with --no-deps
# uv's environment variable for each pip option it has an equivalent of, and how it joins several values.
UV_FOR_PIP_OPTION = {
    "index-url": ("UV_DEFAULT_INDEX", " "),
    "extra-index-url": ("UV_INDEX", " "),
    "find-links": ("UV_FIND_LINKS", ","),
    "constraint": ("UV_CONSTRAINT", " "),
    "no-index": ("UV_NO_INDEX", " "),
    "trusted-host": ("UV_INSECURE_HOST", " "),
    "cert": ("SSL_CERT_FILE", " "),
    "timeout": ("UV_HTTP_TIMEOUT", " "),
    "default-timeout": ("UV_HTTP_TIMEOUT", " "),
}
# Later scopes win, as in pip: the [global] section, then [install], then PIP_* variables.
PIP_SCOPE_ORDER = ("global", "install", ":env:")
SEED_PACKAGES = {"pip", "setuptools", "wheel"}  # what makes a venv usable, not what the project requires


class SetupError(Exception):
    """One line for the user: what could not be done and what to do instead."""


@dataclass(frozen=True)
class Installer:
    name: str  # "uv" or "pip"
    uv: str | None = None  # the uv executable when name is "uv"
    why: str = ""  # why this installer, for the one line `make venv` prints


def pip_options(config_list: str) -> dict[str, str]:
    """pip's effective install options from `pip config list` output (lines `scope.option='value'`),
    the latest scope winning."""
    found: dict[tuple[str, str], str] = {}
    for line in config_list.splitlines():
        match = re.fullmatch(r"([^.=]*)\.([a-z-]+)='(.*)'", line.strip())
        if match and match.group(1) in PIP_SCOPE_ORDER:
            found[match.group(1), match.group(2)] = match.group(3)
    options: dict[str, str] = {}
    for scope in PIP_SCOPE_ORDER:
        options.update({option: value for (where, option), value in found.items() if where == scope})
    return options


def uv_environment(options: dict[str, str], environment: dict[str, str]) -> dict[str, str]:
    """`environment` plus the UV_* variables that give uv pip's `options`; a variable the user set
    already is kept as set."""
    added = {"UV_INDEX_STRATEGY": "unsafe-best-match"}
    for option, value in options.items():
        if option in UV_FOR_PIP_OPTION:
            variable, separator = UV_FOR_PIP_OPTION[option]
            values = value.split()
            if option == "no-index":
                values = ["1"] if value.lower() in ("1", "true", "yes", "on") else []
            if values:
                added[variable] = separator.join(values)
    return {**added, **environment}


def tool_folder() -> Path:
    """Where a fetched uv is kept, shared by every clone of this user (a warm cache for the next)."""
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "gsm8k-qlora-toolkit" / UV_REQUIREMENT.replace("==", "-")


def fetch_uv(python: str) -> str:
    """The pinned uv, installed by pip into tool_folder() once; SetupError when pip cannot get it."""
    folder = tool_folder()
    uv = folder / "bin" / "uv"
    if uv.is_file():
        return str(uv)
    partial = folder.with_name(folder.name + ".partial")  # renamed when whole: a kill leaves no half uv
    shutil.rmtree(partial, ignore_errors=True)
    done = subprocess.run([python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                           "--target", str(partial), UV_REQUIREMENT], capture_output=True, text=True)
    if done.returncode != 0 or not (partial / "bin" / "uv").is_file():
        raise SetupError(f"pip could not install {UV_REQUIREMENT} into {partial}: {last_line(done.stderr)}")
    try:
        partial.replace(folder)
    except OSError:  # another make venv finished first: its uv is the same pin
        shutil.rmtree(partial, ignore_errors=True)
        if not uv.is_file():
            raise
    return str(uv)


def choose_installer(wanted: str, python: str, venv_args: list[str]) -> Installer:
    """auto: uv (on PATH, else fetched) unless venv_args are given (they are `python -m venv` options;
    uv's venvs ignore --system-site-packages when installing and would reinstall what the system
    provides, e.g. the Docker image's CUDA torch) or uv cannot be had; pip: pip; uv: uv or an error."""
    if wanted == "pip":
        return Installer("pip", why="INSTALLER=pip")
    if venv_args:
        if wanted == "uv":
            raise SetupError(f"INSTALLER=uv with VENV_ARGS={' '.join(venv_args)}: those are `python -m venv` options;"
                             " use INSTALLER=pip (or auto)")
        return Installer("pip", why=f"VENV_ARGS={' '.join(venv_args)} are options of `python -m venv`")
    on_path = shutil.which("uv")
    if on_path:
        return Installer("uv", on_path, why="uv on PATH")
    try:
        return Installer("uv", fetch_uv(python), why=f"{UV_REQUIREMENT} from the registry")
    except SetupError as error:
        if wanted == "uv":
            raise
        return Installer("pip", why=f"no uv ({error})")


def install_commands(installer: Installer, python: str, venv: str, venv_args: list[str]) -> list[list[str]]:
    """The commands that make `venv` hold REQUIREMENTS and NO_DEPS_REQUIREMENTS. An existing venv is
    updated in place (a change of pins installs the changed packages only)."""
    venv_python = os.path.join(venv, "bin", "python")
    if installer.name == "uv":
        uv = [installer.uv, "pip", "install", "--quiet", *compile_option(), "--python", venv_python]
        # --seed: pip in the venv too (`make wheelhouse` and users' own `pip install` use it).
        return [[installer.uv, "venv", "--quiet", "--seed", "--allow-existing", "--python", python, venv],
                [*uv, "-r", REQUIREMENTS], [*uv, "--no-deps", "-r", NO_DEPS_REQUIREMENTS]]
    pip = [venv_python, "-m", "pip", "install", "--quiet"]
    return [[python, "-m", "venv", *venv_args, venv], [*pip, "--upgrade", "pip"], [*pip, "-r", REQUIREMENTS],
            [*pip, "--no-deps", "-r", NO_DEPS_REQUIREMENTS]]


def compile_option() -> list[str]:
    """uv's --compile-bytecode where Python writes no bytecode itself (PYTHONDONTWRITEBYTECODE, as on
    this project's CI machines): without it every process would compile torch and transformers anew
    (+8 s a stage on 2 cores), and compiling all at install costs ~17 s once. Elsewhere the first
    import of a module writes its bytecode (only what is used, ~9 s once), as pip's compiled venv
    would have it from the start; uv's default."""
    return ["--compile-bytecode"] if sys.flags.dont_write_bytecode else []


def installer_environment(installer: Installer, python: str) -> dict[str, str]:
    if installer.name == "pip":
        return dict(os.environ)
    listed = subprocess.run([python, "-m", "pip", "config", "list"], capture_output=True, text=True)
    return uv_environment(pip_options(listed.stdout), dict(os.environ))


def make_venv(installer: Installer, python: str, venv: str, venv_args: list[str]) -> None:
    environment = installer_environment(installer, python)
    for command in install_commands(installer, python, venv, venv_args):
        if subprocess.run(command, env=environment).returncode != 0:
            raise SetupError(f"{installer.name} failed: {' '.join(command)}")


def planned_set(installer: Installer, python: str) -> set[str]:
    """name==version of every package the installer would put into a new venv (seed packages left out),
    resolved now, without installing: what two installers are compared by."""
    environment = installer_environment(installer, python)
    planned: set[str] = set()
    with tempfile.TemporaryDirectory() as scratch:
        if installer.name == "uv":  # uv resolves against a venv: an empty one
            venv = os.path.join(scratch, "venv")
            subprocess.run([installer.uv, "venv", "--quiet", "--python", python, venv], env=environment, check=True)
        for extra, requirements in (([], REQUIREMENTS), (["--no-deps"], NO_DEPS_REQUIREMENTS)):
            if installer.name == "uv":
                done = subprocess.run([installer.uv, "pip", "install", "--dry-run", "--python", venv, *extra,
                                       "-r", requirements], env=environment, capture_output=True, text=True)
                lines = [line[3:] for line in done.stderr.splitlines() if line.startswith(" + ")]
            else:
                report = os.path.join(scratch, "report.json")
                done = subprocess.run([python, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
                                       "--report", report, *extra, "-r", requirements],
                                      env=environment, capture_output=True, text=True)
                lines = _report_lines(report) if done.returncode == 0 else []
            if done.returncode != 0:
                raise SetupError(f"{installer.name} could not resolve {requirements}: {last_line(done.stderr)}")
            planned.update(_normalized(line) for line in lines)
    return {line for line in planned if line.split("==")[0] not in SEED_PACKAGES}


def _report_lines(report: str) -> list[str]:
    with open(report) as file:
        return [f"{item['metadata']['name']}=={item['metadata']['version']}" for item in json.load(file)["install"]]


def _normalized(requirement: str) -> str:
    name, version = requirement.split("==", 1)
    return f"{re.sub(r'[-_.]+', '-', name).lower()}=={version.strip()}"
