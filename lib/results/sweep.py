"""Checkpoint sweep: which checkpoints to evaluate, and which one to report.

The final adapter is the last checkpoint's weights and is evaluated as the run itself, so the
sweep adds the `sweep.last_n - 1` checkpoints before it (stages/sweep.py lists them for Make).
"""

from __future__ import annotations

from lib.pipeline.artifacts import CHECKPOINT_PREFIX, RunPaths, checkpoint_step
from lib.results.stats import paired_difference


def earlier_checkpoints(run: RunPaths, last_n: int) -> list[str]:
    """Names of the last_n - 1 newest checkpoints before the final one, oldest first."""
    steps = sorted(checkpoint_step(p.name) for p in run.checkpoints.glob(f"{CHECKPOINT_PREFIX}*")
                   if (p / "adapter_config.json").is_file())
    return [f"{CHECKPOINT_PREFIX}{step}" for step in steps[:-1][-(last_n - 1):]] if last_n > 1 else []


def add_differences_to_final(scores: list[dict], correct_by_name: dict[str, dict], final: str) -> None:
    """Each checkpoint's paired GSM8K accuracy difference to the final adapter (same questions),
    with its 95% interval and McNemar p, so the best can be told apart from noise.
    `correct_by_name`: checkpoint name -> {question id: strict correct}."""
    reference = correct_by_name[final]
    for score in scores:
        own = correct_by_name[score["checkpoint"]]
        paired = paired_difference([reference[i] for i in reference], [own[i] for i in reference])
        low, high = paired["ci95"]
        score.update({"accuracy_vs_final": round(paired["difference"], 4), "ci95_low": round(low, 4),
                      "ci95_high": round(high, 4), "mcnemar_p": round(paired["mcnemar_p"], 6)})


def distinguishable_line(scores: list[dict], chosen: str, final: str) -> str:
    """Whether the reported checkpoint's accuracy is distinguishable from the final adapter's."""
    if chosen == final:
        return f"the final adapter ({final}) is reported"
    score = next(s for s in scores if s["checkpoint"] == chosen)
    inside = score["ci95_low"] <= 0 <= score["ci95_high"]
    return (f"{chosen} vs the final adapter: accuracy {score['accuracy_vs_final']:+.3f}"
            f" (95% CI {score['ci95_low']:+.3f}"
            f" to {score['ci95_high']:+.3f}, McNemar p {score['mcnemar_p']:.3g}):"
            f" {'not distinguishable on these questions' if inside else 'a real difference on these questions'}")


def choose_best(scores: list[dict]) -> dict:
    """Highest accuracy, then highest safety; a tie goes to the later step."""
    return max(scores, key=lambda s: (s["accuracy"], s["safety"], s["step"]))
