"""Capturing the static decode step once per window and replaying it (hardware.decode: static on CUDA).

Eager, a Qwen3-4B decode step is ~2,500 kernel launches (tests/bench/bench_decode_ops.py): 20-30 ms
of host time for a step whose work on an H100 takes ~4 ms. A CUDA graph records those launches once
and replays them with one call. A recording keeps the addresses of every tensor it touched, so the
step it records (lib/engine/static.py `step_body`) reads and writes only tensors that keep their
address for the whole call, reads nothing back to the host (capture fails on such a read), and
depends on no Python value that changes between steps (a replay would repeat the captured value).
tests/engine/test_graphs.py checks all three on the CPU (the addresses at every replay, the other two
with torch.compile's tracer). A step's window (the cache columns it attends over) is a Python
value, so each window has its own graph; a call captures a dozen or so, sharing one memory pool.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

Step = Callable[[], torch.Tensor]  # a decode step over fixed tensors, returning its logits
Capture = Callable[[Step], Step]  # records a step once; what it returns runs the recording


def warm_up(body: Step, device: torch.device) -> torch.Tensor:
    """Run the call's first step eagerly. On CUDA it runs on a side stream, as PyTorch asks of the
    iterations before a capture (lazy initialisation such as cuBLAS workspaces stays off the capture)."""
    if device.type != "cuda":
        return body()
    main, side = torch.cuda.current_stream(device), torch.cuda.Stream(device)
    side.wait_stream(main)
    with torch.cuda.stream(side):
        logits = body()
    main.wait_stream(side)
    logits.record_stream(main)  # made on the side stream, read on the main one
    return logits


class CudaGraphs:
    """Records a step as a CUDA graph on `device`; calling what it returns replays the graph and
    gives its logits (a tensor of the graph's own memory, overwritten by the next replay).

    The graphs it records share one memory pool: the engine replays one at a time and consumes a
    replay's logits before the next replay, and each graph's logits stay allocated while it lives,
    so one graph's temporaries may reuse another's without harm."""

    def __init__(self, device: torch.device):
        self.device = device
        self.pool = None  # made at the first capture (a CUDA call)

    def __call__(self, body: Step) -> Step:
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.device(self.device):
            self.pool = self.pool or torch.cuda.graph_pool_handle()
            # The capture stream on the model's device, whichever device is current in this process.
            with torch.cuda.graph(graph, pool=self.pool, stream=torch.cuda.Stream(self.device)):
                logits = body()  # recorded: nothing runs, so no state changes

        def replay() -> torch.Tensor:
            graph.replay()
            return logits

        return replay


def capture_for(device: torch.device) -> Capture | None:
    """How the static step is captured on this device: a CUDA graph on CUDA; elsewhere none (eager)."""
    return CudaGraphs(device) if device.type == "cuda" else None
