"""Checkpoint sweep: which checkpoints to evaluate, and which one to report.

The final adapter is the last checkpoint's weights and is evaluated as the run itself, so the
sweep adds the `sweep.last_n - 1` checkpoints before it.

    python -m lib.sweep --preset presets/medium.yaml --run medium   # prints their names (Make uses it)
"""

from __future__ import annotations

from pathlib import Path

import click

from lib.run import CHECKPOINT_PREFIX, checkpoint_step


def earlier_checkpoints(run_dir: Path, last_n: int) -> list[str]:
    """Names of the last_n - 1 newest checkpoints before the final one, oldest first."""
    steps = sorted(checkpoint_step(p.name) for p in (run_dir / "checkpoints").glob(f"{CHECKPOINT_PREFIX}*")
                   if (p / "adapter_config.json").is_file())
    return [f"{CHECKPOINT_PREFIX}{step}" for step in steps[:-1][-(last_n - 1):]] if last_n > 1 else []


def choose_best(scores: list[dict]) -> dict:
    """Highest accuracy, then highest safety; a tie goes to the later step."""
    return max(scores, key=lambda s: (s["accuracy"], s["safety"], s["step"]))


@click.command()
@click.option("--preset", required=True, type=click.Path())
@click.option("--run", "run", required=True)
@click.option("--set", "overrides", multiple=True)
@click.option("--smoke", is_flag=True)
@click.option("--artifacts", envvar="ARTIFACTS_DIR", default="artifacts")
def main(preset, run, overrides, smoke, artifacts):
    """Print the checkpoints the sweep evaluates (nothing when the preset's sweep is off)."""
    from lib.config import load_config
    from lib.run import run_dir

    config = load_config(preset, overrides, smoke=smoke)
    if config.sweep.enabled:
        print(" ".join(earlier_checkpoints(run_dir(artifacts, run), config.sweep.last_n)))


if __name__ == "__main__":
    main()
