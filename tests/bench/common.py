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
    from lib.embedded import resolve_model_path

    return resolve_model_path("embedded:smollm2-135m-instruct", MODELS_DIR)


class CompiledStep:
    """A capture for the static decode step (StaticStep(capture=...)) that compiles its decode step
    with inductor, without inductor's own CUDA graphs: norms, rotary, the attention merge and the
    other elementwise ops fuse into a few kernels, and on CUDA the compiled step is then recorded in
    the engine's own graph (lib/engine/graphs.py) and replayed. Elsewhere the compiled code runs each
    step. The engine records a window's step right after running it eagerly, but compiling means
    running: so a window's first call through this compiles and runs that step, the second records
    the graph and replays it. No stage uses this: `bench_gpu.py --compiled` measures whether it is
    faster on a card, and `bench_decode_ops.py` counts the kernels it issues."""

    steps_before_replays = 3  # a window's eager step, its compiling step, its recording step

    def __init__(self, device):
        self.device = device

    def __call__(self, body):
        import torch

        from lib.engine.graphs import CudaGraphs

        compiled = torch.compile(body, fullgraph=True)
        if self.device.type != "cuda":
            return compiled
        graph = []

        def step():
            if graph == []:  # the window's first call: compiles, and runs this step
                graph.append(None)
                return compiled()
            if graph == [None]:  # records the compiled step (nothing runs), then replays it
                graph[0] = CudaGraphs(self.device)(compiled)
            return graph[0]()

        return step
