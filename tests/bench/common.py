"""What the benchmarks share: the repository on sys.path, the GSM8K files they read (the real ones
in ../shared/data/gsm8k when present, else the demo set) and the embedded model's folder.

The benchmarks run as scripts (`python tests/bench/bench_x.py`), so this folder is on sys.path and
`import common` finds this file; `make bench` runs only the bench_*.py files.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
SHARED_GSM8K = REPO.parent / "shared" / "data" / "gsm8k"
DEMO_GSM8K = REPO / "data" / "demo"
MODELS_DIR = REPO / "artifacts" / "models"


def gsm8k_file(split: str) -> tuple[Path, bool]:
    """(the split's JSONL, whether it is the real data): ../shared's when present, else the demo set's."""
    real = SHARED_GSM8K / f"{split}.jsonl"
    return (real, True) if real.is_file() else (DEMO_GSM8K / f"gsm8k_{split}.jsonl", False)


def embedded_model_path() -> str:
    """The embedded SmolLM2-135M-Instruct as an HF folder (converted on first use)."""
    from lib.models import resolve_model_path

    return resolve_model_path("embedded:smollm2-135m-instruct", MODELS_DIR)
