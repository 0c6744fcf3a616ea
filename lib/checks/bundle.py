"""The bundle on a GPU node: its wheels installed once into a folder of their own, first on the path.

Each part of the GPU check is one command a node can be given as is, and each may land on a fresh
machine (a borrowed node is handed back when idle; the next job starts bare). So a part installs
`<bundle>/wheels/*.whl` where the site folder does not hold exactly those wheels, with pip
`--no-index --no-deps --target` (nothing from the network, nothing over the image's torch) and
`--no-compile` (byte-compiling took 14.5 s of a 16 s install), then runs itself again with the
folder first on PYTHONPATH, so that the carried transformers is the one imported, in this process
and in every step it starts. Plain Python: it runs before anything the bundle carries is importable.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

SITE = Path("/tmp/gsm8k-site")  # the default: a machine's scratch, gone with the machine
INSTALLED = ".bundle-wheels"  # in the site folder: the wheels it holds, one name a line, written last
REPO = Path(__file__).resolve().parents[2]


def installed_wheels(site: Path) -> list[str]:
    """The wheel names the site folder was completed with ([] when absent or unfinished)."""
    listing = site / INSTALLED
    return listing.read_text(encoding="utf-8").split() if listing.is_file() else []


def install_bundle(bundle: Path, site: Path, echo=print) -> bool:
    """Install the bundle's wheels into `site` unless it holds exactly them; True when it installed.
    Into a staging folder first, renamed when complete: a killed install leaves no site that looks done."""
    wheels = sorted((bundle / "wheels").glob("*.whl"))
    names = [wheel.name for wheel in wheels]
    if installed_wheels(site) == names:
        return False
    staging = site.with_name(site.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    if wheels:
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps", "--no-compile",
                        "--disable-pip-version-check", "--target", str(staging), *map(str, wheels)], check=True)
    (staging / INSTALLED).write_text("".join(f"{name}\n" for name in names), encoding="utf-8")
    shutil.rmtree(site, ignore_errors=True)
    staging.rename(site)
    echo(f"gpu-check: {len(names)} wheel(s) of {bundle}/wheels installed into {site}")
    return True


def on_path(site: Path) -> bool:
    """Whether this process imports from `site` before anything else."""
    resolved = os.path.realpath(site)
    return any(os.path.realpath(entry) == resolved for entry in sys.path[:2] if entry)


def run_with_bundle(bundle: Path, site: Path) -> None:
    """Make this command run with the bundle: install it where absent, and when this process does not
    have the site first on its path, replace it by the same command with PYTHONPATH=<site>:<repo>
    (os.execve: the same process id, arguments and environment otherwise). Without a wheels folder
    it says so and runs with this Python's own packages (the environment step then shows what is missing)."""
    if not (bundle / "wheels").is_dir():
        print(f"gpu-check: no {bundle}/wheels: running with this Python's own packages")
        return
    install_bundle(bundle, site)
    if on_path(site):
        return
    path = os.pathsep.join(filter(None, [str(site), str(REPO), os.environ.get("PYTHONPATH")]))
    sys.stdout.flush()
    os.execve(sys.executable, sys.orig_argv, {**os.environ, "PYTHONPATH": path})
