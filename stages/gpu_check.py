"""The GPU check: what a borrowed GPU node runs, in parts that are each one self-contained command.

    make wheelhouse                     # here: gpu-bundle/ (wheels + the check's tiny models); copy it and the repo
    python3 -m stages.gpu_check part1 --out $OUT --card h200   # on the node, from the repository's root
    python3 -m stages.gpu_check part2 --out $OUT --card h200   # the same machine or a fresh one
    python3 -m stages.gpu_check part3 --out $OUT --card h200   # optional: decoding at the medium and strong shapes
    make gpu-check CARD=h200            # parts 1 and 2, where the venv and make are there
    python -m stages.gpu_check part2 --tiny --out /tmp/check   # the same steps on a 2-layer model, any machine

Each part first installs the bundle's wheels into --site where that folder does not hold them
(pip --no-index --no-deps --no-compile --target) and runs itself again with it first on the path;
then builds the random Qwen3-4B-shaped model where --work has none, and runs its steps.
part1: the environment (library versions and where each comes from), the model, `pytest -m gpu`,
and bench_gpu.py's decoding at the simple preset's shapes and the attention kernels.
part2: the environment, the model, bench_gpu.py's QLoRA training, and the whole chain
(prep_fewshot .. summarize at smoke sizes, 64 GSM8K-style questions, the bundle's tiny judge).
part3: decoding at the medium and strong presets' shapes. Each step's log streams into --out as
<step>.txt and its row is appended to --out/gpu_check.md when it ends, so a killed job keeps what it
measured; the table is printed last. Without CUDA a part stops with one line (--tiny runs the same
steps on a 2-layer model on the CPU).
"""

import sys
from pathlib import Path

import click

from lib.checks.bundle import SITE, run_with_bundle
from lib.checks.gpu import BUDGET, PARTS, build_model, describe_environment, run_chain, run_part
from lib.console import stage_help
from lib.errors import InputError

WORK = Path("/tmp/gsm8k-gpu-check")
work_option = click.option("--work", type=click.Path(file_okay=False, path_type=Path), default=WORK,
                           show_default=True, help="Scratch folder: the 4B-shaped model (~8 GB) and the chain's run.")
bundle_option = click.option("--bundle", type=click.Path(file_okay=False, path_type=Path), default="gpu-bundle",
                             show_default=True, help="What `make wheelhouse` wrote: its wheels/ and models/.")
tiny_option = click.option("--tiny", is_flag=True, help="A 2-layer model of the same kind: the wiring, on any device.")


@click.group(help=stage_help(__doc__))
def main():
    pass


def _part(part: str):
    @main.command(name=part, help=f"The check's {part} (see --help of the group).")
    @click.option("--out", type=click.Path(file_okay=False, path_type=Path), envvar="OUT", required=True,
                  help="Where logs and gpu_check.md go (env OUT).")
    @click.option("--card", type=click.Choice(["h100", "h200", "a100"]), default="h100", show_default=True,
                  help="The card whose datasheet peaks bench_gpu.py prints beside its measured ones.")
    @click.option("--budget", type=int, default=BUDGET, show_default=True, help="Seconds for the whole part.")
    @click.option("--site", type=click.Path(file_okay=False, path_type=Path), default=SITE, show_default=True,
                  help="Where the bundle's wheels are installed (once per machine), put first on the path.")
    @click.option("--no-install", is_flag=True,
                  help="This Python has every package (the venv, as `make gpu-check` runs it): install nothing.")
    @work_option
    @bundle_option
    @tiny_option
    def command(out, card, budget, site, no_install, work, bundle, tiny):
        if not no_install:
            run_with_bundle(bundle, site)  # a fresh machine: installs, then runs this command again with it
        import torch

        if not tiny and not torch.cuda.is_available():
            from lib.devices import cuda_report

            raise click.ClickException(f"gpu-check needs CUDA: {cuda_report()}")
        if not (bundle / "models").is_dir():  # built here where the embedded model is installed, else copied
            from lib.checks.assets import write_check_models

            try:
                write_check_models(bundle / "models", Path("artifacts") / "models")
            except InputError as err:
                raise click.ClickException(f"{bundle}/models: not found and cannot be built here ({err});"
                                           " run `make wheelhouse` where the venv is and copy gpu-bundle/") from None
        work.mkdir(parents=True, exist_ok=True)
        sys.exit(0 if run_part(part, out, work, bundle, card, budget, tiny) else 1)

    return command


part1, part2, part3 = (_part(part) for part in PARTS)


@main.command()
def environment():
    """Library versions and origins, the device, whether make is there."""
    describe_environment()


@main.command()
@work_option
@bundle_option
@tiny_option
def model(work, bundle, tiny):
    """Build the random Qwen3-4B-shaped model in --work (kept when present)."""
    work.mkdir(parents=True, exist_ok=True)
    build_model(work, bundle, tiny)


@main.command()
@work_option
@bundle_option
@tiny_option
def chain(work, bundle, tiny):
    """The seven stages in Make's order on the model in --work."""
    sys.exit(run_chain(work, bundle, tiny))


if __name__ == "__main__":
    main()
