"""What to copy to an offline GPU node whose image already has PyTorch: wheels and the check's small models.

    make wheelhouse                                   # IMAGE=docker/images/h200-cuda13.txt CUDA=13.0 PYTHON=3.12
    make wheelhouse IMAGE=docker/images/mysite.txt CUDA=12.8 PYTHON=3.11
    python -m stages.wheelhouse --image docker/images/h200-cuda13.txt --cuda 13.0 --python 3.12 --out gpu-bundle

Reads requirements.txt (the pins), requirements-range.txt (the versions an image may already hold)
and the image file (what the node's Python holds). Writes <out>/wheels/: the pinned packages the
image lacks or holds outside the range, and what they need that the image lacks, for the node's
Python (bitsandbytes slimmed to the CPU and CUDA libraries); <out>/models/: the embedded SmolLM2's
tokenizer and chat template with a tiny random model, for the GPU check (no GGUF package on the
node). Prints what is carried and why, and the size to copy (bundle + repository; target 30 MiB).
On the node (docs/machines.md):

    python3 -m pip install --no-index --no-deps --target /tmp/gsm8k-site gpu-bundle/wheels/*.whl
    PYTHONPATH=/tmp/gsm8k-site:. python3 -m stages.gpu_check part1 --bundle gpu-bundle --out /some/folder
"""

from pathlib import Path

import click

from lib.checks.wheelhouse import build, folder_bytes, read_ranges, read_versions, tracked_bytes
from lib.console import stage_help
from lib.errors import InputError

REPO = Path(__file__).resolve().parents[1]
TARGET_MIB = 30


@click.command(help=stage_help(__doc__))
@click.option("--image", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default="docker/images/h200-cuda13.txt", show_default=True, help="What the node's Python holds.")
@click.option("--cuda", default="13.0", show_default=True, help="The node's CUDA version (bitsandbytes' library).")
@click.option("--python", "python", default="3.12", show_default=True, help="The node's Python version.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default="gpu-bundle", show_default=True)
@click.option("--models-dir", envvar="MODELS_DIR", default="artifacts/models", show_default=True,
              type=click.Path(path_type=Path), help="Where the embedded model is converted (env MODELS_DIR).")
def main(image, cuda, python, out, models_dir):
    from lib.checks.assets import write_check_models

    try:
        pins = read_versions(REPO / "requirements.txt", "requirements.txt")
        carried = build(pins, read_ranges(REPO / "requirements-range.txt"), read_versions(image, "an image file"),
                        out / "wheels", python, cuda)
    except InputError as err:
        raise click.ClickException(str(err)) from None
    for item in carried:
        print(f"wheelhouse: {item.requirement}: {item.reason}")
    write_check_models(out / "models", models_dir)
    bundle, repository = folder_bytes(out), tracked_bytes(REPO)
    total = (bundle + repository) / 2**20
    print(f"wheelhouse: {out} {bundle / 2**20:.1f} MiB + repository {repository / 2**20:.1f} MiB = {total:.1f} MiB"
          f" to copy ({'within' if total <= TARGET_MIB else 'OVER'} the {TARGET_MIB} MiB target)")


if __name__ == "__main__":
    main()
