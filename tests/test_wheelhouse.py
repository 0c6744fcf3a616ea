"""The wheels a GPU node needs: what is carried and why, bitsandbytes slimmed, bad files named (no network:
the wheels here are small archives written by the tests)."""

import zipfile

import pytest
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from lib.checks.wheelhouse import (
    direct_needs,
    missing_dependencies,
    node_environment,
    read_ranges,
    read_versions,
    slim_bitsandbytes,
)
from lib.errors import InputError


def write_wheel(path, files: dict[str, bytes], requires: list[str] = ()):
    name = path.name.split("-")[0]
    metadata = "Metadata-Version: 2.1\nName: x\n" + "".join(f"Requires-Dist: {r}\n" for r in requires)
    files = {**files, f"{name}-1.0.dist-info/METADATA": metadata.encode()}
    record = "".join(f"{n},sha256=x,{len(d)}\n" for n, d in files.items()) + f"{name}-1.0.dist-info/RECORD,,\n"
    with zipfile.ZipFile(path, "w") as archive:
        for file_name, data in files.items():
            archive.writestr(file_name, data)
        archive.writestr(f"{name}-1.0.dist-info/RECORD", record)
    return path


def test_the_carried_set_is_what_the_image_lacks_or_holds_outside_the_range():
    pins = {"torch": Version("2.13.0"), "transformers": Version("5.23.0"), "peft": Version("0.21.2"),
            "bitsandbytes": Version("0.50.2"), "gguf": Version("0.19.0"), "accelerate": Version("1.15.0")}
    ranges = {"torch": SpecifierSet(">=2.11"), "transformers": SpecifierSet(">=5.23")}
    image = {"torch": Version("2.11.0"), "transformers": Version("5.17.0"), "peft": None,
             "accelerate": Version("1.14.0")}
    carried = {item.name: item.reason for item in direct_needs(pins, ranges, image)}
    assert carried == {"bitsandbytes": "not in the image",
                       "transformers": "the image has 5.17.0, supported >=5.23",
                       "accelerate": "the image has 1.14.0, supported >=1.15.0"}  # no range: at least the pin
    # torch 2.11 is in range (never carried over the image's CUDA build); peft's version unknown: trusted;
    # gguf only converts the embedded model, which a node does not get


def test_a_carried_wheel_brings_what_it_needs_that_the_image_lacks(tmp_path):
    wheel = write_wheel(tmp_path / "datasets-1.0-py3-none-any.whl", {"datasets/__init__.py": b""},
                        ["dill<0.4.2,>=0.3.0", "numpy>=1.17", "pyarrow>=21", "pytest; extra == 'tests'",
                         "pywin32; sys_platform == 'win32'", "tokenizers>=0.30"])
    image = {"numpy": Version("2.5.2"), "pyarrow": None, "tokenizers": Version("0.23.2")}
    needs = missing_dependencies(wheel, node_environment("3.12"), image, carried=set())
    assert {(n.name, n.requirement) for n in needs} == {("dill", "dill<0.4.2,>=0.3.0"),
                                                        ("tokenizers", "tokenizers>=0.30")}
    assert [n.reason for n in needs if n.name == "tokenizers"] == ["needed by datasets; the image has 0.23.2"]


def test_bitsandbytes_keeps_the_cpu_and_the_nodes_cuda_library_and_a_matching_record(tmp_path):
    libraries = {f"bitsandbytes/libbitsandbytes_{kind}.so": b"x" * 1000
                 for kind in ("cpu", "cuda118", "cuda126", "cuda130", "rocm64", "xpu")}
    wheel = write_wheel(tmp_path / "bitsandbytes-1.0-py3-none-manylinux_2_24_x86_64.whl",
                        {**libraries, "bitsandbytes/__init__.py": b""})
    before, after = slim_bitsandbytes(wheel, "13.0")
    assert after < before
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        record = archive.read("bitsandbytes-1.0.dist-info/RECORD").decode()
    kept = {n for n in names if "libbitsandbytes_" in n}
    assert kept == {"bitsandbytes/libbitsandbytes_cpu.so", "bitsandbytes/libbitsandbytes_cuda130.so"}
    assert {line.split(",")[0] for line in record.splitlines()} == names  # pip checks files against it
    with pytest.raises(InputError, match="no libbitsandbytes_cuda122: pick another CUDA="):
        slim_bitsandbytes(wheel, "12.2")


def test_a_malformed_image_or_range_file_is_named_with_its_line(tmp_path):
    image = tmp_path / "image.txt"
    image.write_text("# comment\ntorch==2.11.0\npeft\ntransformers >= 5\n")
    with pytest.raises(InputError, match=rf"^{image}:4: expected `name==version` or `name` in an image file"):
        read_versions(image, "an image file")
    image.write_text("torch==2.11.0\npeft  # version unknown\n")
    assert read_versions(image, "an image file") == {"torch": Version("2.11.0"), "peft": None}
    ranges = tmp_path / "range.txt"
    ranges.write_text("torch>=2.11\ntorch >=< 2\n")
    with pytest.raises(InputError, match=rf"^{ranges}:2: not a requirement"):
        read_ranges(ranges)


def test_the_shipped_files_parse_and_the_nodes_torch_is_never_carried():
    from lib.checks.wheelhouse import NOT_FOR_A_NODE
    from tests.helpers import REPO

    pins = read_versions(REPO / "requirements.txt", "requirements.txt")
    image = read_versions(REPO / "docker" / "images" / "h200-cuda13.txt", "an image file")
    carried = {item.name for item in direct_needs(pins, read_ranges(REPO / "requirements-range.txt"), image)}
    assert "torch" not in carried and "transformers" in carried and not carried & NOT_FOR_A_NODE
    assert not carried & {"pytest", "matplotlib", "tensorboard"}  # the image has them: no second copy
