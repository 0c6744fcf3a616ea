"""What can be checked of the container here (no Docker engine): the Dockerfile, the ignore file
and the command lines the Make targets generate."""

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

from lib.venv_setup import choose_installer, install_commands
from tests.helpers import REPO

FAKE_TOKEN = "hf_FAKEdockerTOKEN0123456789"


def make_dry_run(*args: str) -> str:
    env = {**os.environ, "HF_TOKEN": FAKE_TOKEN}
    env.pop("MAKEFLAGS", None)
    return subprocess.run(["make", "--no-print-directory", "-n", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, check=True).stdout


def test_docker_target_runs_the_make_target_with_gpus_mounts_and_the_token_by_name():
    commands = make_dry_run("docker", "T=strong").splitlines()
    line = [line for line in commands if line.startswith("docker run")][-1]
    assert "--gpus all" in line and re.search(r"-e HF_TOKEN(\s|$)", line)
    # As the calling user, with a writable HOME, into folders created before Docker could make them as root.
    assert '--user "$(id -u):$(id -g)"' in line and "-e HOME=/tmp" in line
    mkdir = f'mkdir -p "{REPO}/artifacts" "{os.environ.get("HOME")}/.cache/huggingface"'
    assert commands.index(mkdir) < commands.index(line)
    assert FAKE_TOKEN not in line
    for mount in (f'"{REPO}":/workspace', f'"{REPO}/data":/workspace/data', f'"{REPO}/artifacts":/workspace/artifacts',
                  ":/cache/huggingface"):
        assert mount in line
    assert line.rstrip().endswith("make strong")


def test_docker_target_passes_preset_run_and_overrides_as_typed():
    typed = """fewshot.k=5 tokenize.system_prompt="It's $5" """
    line = [line for line in make_dry_run("docker", "T=smoke", "PRESET=simple", f"SET={typed}").splitlines()
            if line.startswith("docker run")][-1]
    assert "make smoke PRESET=simple" in line
    passed = shlex.split(line[line.index("make smoke"):])  # what the container's shell hands its make
    assert f"SET={typed}" in passed


def test_docker_build_uses_the_dockerfile():
    assert "docker build -f docker/Dockerfile -t gsm8k-qlora-toolkit ." in make_dry_run("docker-build")


def test_image_installs_exactly_the_pinned_requirements():
    dockerfile = (REPO / "docker" / "Dockerfile").read_text()
    assert "COPY --chown=toolkit:toolkit Makefile requirements.txt requirements-nodeps.txt ./" in dockerfile
    assert "RUN make venv VENV_ARGS=--system-site-packages\n" in dockerfile
    assert dockerfile.index("ENV VENV_READY=1") > dockerfile.index("RUN make venv")  # the build itself makes it
    assert re.search(r"^USER 1000", dockerfile, re.M) and "ARG BASE_IMAGE=pytorch/pytorch:2.13.0-" in dockerfile
    venv_recipe = make_dry_run("-B", "venv", "VENV=/tmp/never-created-venv", "VENV_READY=0",  # the suite's is 1
                               "VENV_ARGS=--system-site-packages")
    assert "--installer 'auto'" in venv_recipe and "--venv-args '--system-site-packages'" in venv_recipe
    # With venv options auto is pip (uv would not see the image's torch): the pinned files, the second --no-deps.
    pip = choose_installer("auto", sys.executable, ["--system-site-packages"])
    commands = [" ".join(command)
                for command in install_commands(pip, "python", "/opt/venv", ["--system-site-packages"])]
    assert commands[0] == "python -m venv --system-site-packages /opt/venv"
    assert commands[-2:] == ["/opt/venv/bin/python -m pip install --quiet -r requirements.txt",
                             "/opt/venv/bin/python -m pip install --quiet --no-deps -r requirements-nodeps.txt"]
    pins = [line for line in (REPO / "requirements.txt").read_text().splitlines() if line and not line.startswith("#")]
    assert pins and all(re.fullmatch(r"[A-Za-z0-9_.-]+==[0-9][^ ]*", pin) for pin in pins)
    assert "torch==2.13.0" in pins
    assert not re.search(r"HF_TOKEN\s*=|ARG HF_TOKEN|ENV HF_TOKEN", dockerfile)  # no secret in any layer


def test_the_image_copies_every_project_file_make_venv_runs_before_running_it():
    loaded = subprocess.run([sys.executable, "-c", "import sys, stages.setup_venv; print('\\n'.join(m.__file__ for m in"
                             " list(sys.modules.values()) if getattr(m, '__file__', None)))"], cwd=REPO,
                            capture_output=True, text=True, check=True).stdout.split()
    project_files = sorted(str(Path(file).relative_to(REPO)) for file in loaded  # the project's code, not .venv's
                           if Path(file).is_relative_to(REPO) and Path(file).relative_to(REPO).parts[0] != ".venv")
    dockerfile = (REPO / "docker" / "Dockerfile").read_text()
    copies = [line.split()[2:] for line in dockerfile[:dockerfile.index("RUN make venv")].splitlines()
              if line.startswith("COPY")]  # COPY --chown=... source... destination
    assert "stages/setup_venv.py" in project_files and "lib/venv_setup.py" in project_files
    for file in project_files:  # copied into its own folder (COPY puts several sources side by side)
        assert any(file in words[:-1] and words[-1] == os.path.dirname(file) + "/" for words in copies), file


def test_build_context_leaves_out_outputs_environments_and_data():
    ignored = (REPO / ".dockerignore").read_text().split()
    assert {"artifacts", ".venv", "data/*", ".git"} <= set(ignored)


def test_inside_the_image_no_make_or_sub_make_redoes_the_venv(tmp_path):
    """What `make docker T=demo` runs in the container, dry: the image's venv stamp older than the
    mounted requirements files. The image's environment (VENV, VENV_READY) reaches every sub-make."""

    stamp = tmp_path / "venv" / ".installed"
    (stamp.parent / "bin").mkdir(parents=True)
    stamp.touch()
    # The image's venv runs (Make records the run with it even under -n): this one's packages, its own stamp.
    (stamp.parent / "bin" / "python").symlink_to(REPO / ".venv" / "bin" / "python")
    (stamp.parent / "lib").symlink_to(REPO / ".venv" / "lib")
    (stamp.parent / "pyvenv.cfg").write_text((REPO / ".venv" / "pyvenv.cfg").read_text())
    os.utime(stamp, (0, 0))  # older than the requirements files, however old the checkout is
    env = {**os.environ, "VENV": str(stamp.parent), "VENV_READY": "1", "ARTIFACTS_DIR": str(tmp_path / "a")}
    env.pop("MAKEFLAGS", None)

    def dry(target, environment):
        return subprocess.run(["make", "-n", target, f"ARTIFACTS={tmp_path / 'a'}"], cwd=REPO, env=environment,
                              capture_output=True, text=True).stdout

    line = [line for line in make_dry_run("docker", "T=demo").splitlines() if line.startswith("docker run")][-1]
    target = line.rsplit("make ", 1)[1].strip()
    inside = dry(target, env)
    assert "make" in inside and "stages." in inside  # the sub-make planned the stages
    assert "stages.setup_venv" not in inside and "pip install" not in inside
    # What the check guards against: without VENV_READY the stale stamp is redone. (Asked of `make -n
    # venv`: a stage goal would remake the included params file for real, venv and all, even under -n.)
    without = dry("venv", {key: value for key, value in env.items() if key != "VENV_READY"})
    assert "stages.setup_venv" in without
