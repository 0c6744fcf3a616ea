"""Checkpoint sweep: which checkpoints to evaluate, and which one to report.

The final adapter is the last checkpoint's weights and is evaluated as the run itself, so the
sweep adds the `sweep.last_n - 1` checkpoints before it.

    python -m lib.sweep --run medium   # prints their names (Make uses it)
"""

from __future__ import annotations

from pathlib import Path

import click

from lib.artifacts import CHECKPOINT_PREFIX, checkpoint_step
from lib.run import resolve_run, run_options


def earlier_checkpoints(run_dir: Path, last_n: int) -> list[str]:
    """Names of the last_n - 1 newest checkpoints before the final one, oldest first."""
    steps = sorted(checkpoint_step(p.name) for p in (run_dir / "checkpoints").glob(f"{CHECKPOINT_PREFIX}*")
                   if (p / "adapter_config.json").is_file())
    return [f"{CHECKPOINT_PREFIX}{step}" for step in steps[:-1][-(last_n - 1):]] if last_n > 1 else []


def choose_best(scores: list[dict]) -> dict:
    """Highest accuracy, then highest safety; a tie goes to the later step."""
    return max(scores, key=lambda s: (s["accuracy"], s["safety"], s["step"]))


@click.command()
@run_options
def main(preset, run, overrides, smoke, reconfigure, artifacts):
    """Print the checkpoints the sweep evaluates (nothing when the run's sweep is off)."""
    from lib.artifacts import run_dir
    from lib.errors import InputError

    try:
        run, config, _ = resolve_run(run, preset, overrides, smoke, artifacts, reconfigure)
    except InputError as err:
        raise click.ClickException(str(err)) from None
    if config.sweep.enabled:
        print(" ".join(earlier_checkpoints(run_dir(artifacts, run), config.sweep.last_n)))


if __name__ == "__main__":
    main()
