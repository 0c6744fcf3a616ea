"""The GPU check: what one GPU node should run, in two parts that each fit a 10-minute job.

    make wheelhouse                     # here: gpu-bundle/ (wheels + the check's tiny models); copy it and the repo
    python3 -m pip install --no-index --no-deps --target /tmp/gsm8k-site gpu-bundle/wheels/*.whl   # on the node
    PYTHONPATH=/tmp/gsm8k-site:. python3 -m stages.gpu_check part1 --out /some/folder --card h200
    PYTHONPATH=/tmp/gsm8k-site:. python3 -m stages.gpu_check part2 --out /some/folder --card h200
    make gpu-check CARD=h200            # both parts, where the venv and make are there
    python -m stages.gpu_check part2 --tiny --out /tmp/check   # the same steps on a 2-layer model, any machine

part1: the environment (library versions and where each comes from), a random Qwen3-4B-shaped model
built once, `pytest -m gpu`, and bench_gpu.py's decoding and attention at Qwen3-4B's shapes.
part2: the same model (reused when part 1 left it in --work), bench_gpu.py's QLoRA training, and
the whole chain (prep_fewshot .. summarize at smoke sizes, 64 GSM8K-style questions, the judge
the bundle's tiny model). Each step's log streams into --out as <step>.txt and its row is appended
to --out/gpu_check.md when it ends, so a killed job keeps what it measured; the table is printed
last. Without CUDA it stops with one line (--tiny runs the same steps on a 2-layer model on the CPU).
"""

import sys
from pathlib import Path

import click

from lib.checks.assets import write_check_models
from lib.checks.gpu import build_model, describe_environment, run_chain, run_part
from lib.errors import InputError
from lib.pipeline.cli import stage_help

WORK = Path("/tmp/gsm8k-gpu-check")
work_option = click.option("--work", type=click.Path(file_okay=False, path_type=Path), default=WORK,
                           show_default=True, help="Scratch folder: the 4B-shaped model (~8 GB) and the chain's run.")
bundle_option = click.option("--bundle", type=click.Path(file_okay=False, path_type=Path), default="gpu-bundle",
                             show_default=True, help="What `make wheelhouse` wrote (its models/ folder is used).")
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
    @click.option("--budget", type=int, default=420, show_default=True, help="Seconds for the whole part.")
    @work_option
    @bundle_option
    @tiny_option
    def command(out, card, budget, work, bundle, tiny):
        import torch

        if not tiny and not torch.cuda.is_available():
            from lib.devices import cuda_report

            raise click.ClickException(f"gpu-check needs CUDA: {cuda_report()}")
        if not (bundle / "models").is_dir():  # built here where the embedded model is installed, else copied
            try:
                write_check_models(bundle / "models", Path("artifacts") / "models")
            except InputError as err:
                raise click.ClickException(f"{bundle}/models: not found and cannot be built here ({err});"
                                           " run `make wheelhouse` where the venv is and copy gpu-bundle/") from None
        work.mkdir(parents=True, exist_ok=True)
        sys.exit(0 if run_part(part, out, work, bundle, card, budget, tiny) else 1)

    return command


part1, part2 = _part("part1"), _part("part2")


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
