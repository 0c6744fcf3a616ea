"""The dynamic decode step (`hardware.decode: dynamic`): rows that grow, leave and are refilled.

The call's batch is `Rows` (lib/engine/kv_rows.py): every step appends one column to the rows' own
cache and mask; a finished row's slot takes the next prompt's prefilled cache at once, or is
removed when nothing is left to start, and unused columns are dropped as rows leave. Every step
has new shapes, so nothing here can be captured as a CUDA graph (lib/engine/static.py can).
"""

from __future__ import annotations

import torch

from lib.engine.kv_rows import Rows, compact, drop, place
from lib.engine.outputs import EngineStats, read_back


class DynamicStep:
    """The engine's decode step over growing rows; what differs from the static one, nothing more."""

    mode = "dynamic"
    # A prefill's first tokens are read back at once: refills and drops are decided by them.
    reads_first_tokens = True

    def start(self, engine, first: Rows, suffix_lengths: list[int], stats: EngineStats) -> Rows:
        """The call's batch: the first prompts' prefilled rows as they are."""
        return first

    def place(self, engine, rows: Rows, fresh: Rows, free: list[int], stats: EngineStats) -> Rows:
        stats.refills += 1
        return place(rows, fresh, free)

    def release(self, rows: Rows, free: list[int]) -> None:
        """Finished rows keep their slot until a newcomer takes it or `settle` drops it."""

    def refillable(self, rows: Rows, free: list[int], pending: int) -> list[int]:
        """Every free slot is refilled at once (a prefill beside a growing batch costs its own tokens only)."""
        return free

    def settle(self, rows: Rows, free: list[int]) -> Rows | None:
        """The batch to decode next: the finished rows nothing took dropped, unused columns compacted;
        None when no row is left."""
        if free:  # nothing left to start: drop the finished rows rather than decode them
            drop(rows, free)
        return compact(rows) if rows.items else None

    def decode_block(self, engine, rows: Rows, stats: EngineStats) -> None:
        """Up to steps_per_sync decode steps with no host read in between, then one copy of their
        tokens. The block never takes a row past max_new_tokens."""
        steps = min(engine.steps_per_sync, engine.max_new_tokens - max(map(len, rows.generated)))
        block = []
        for _ in range(max(steps, 1)):
            self._decode_step(engine, rows)
            block.append(rows.last)
        for item, tokens, new in zip(rows.items, rows.generated, read_back(torch.stack(block, dim=1), stats)):
            stats.decode_wasted += len(new) - engine.extend_row(item, tokens, new)
        stats.decode_positions += len(block) * len(rows.items)

    def _decode_step(self, engine, rows: Rows) -> None:
        """One token for every row, all on the device."""
        mask = torch.cat([rows.mask, rows.mask.new_ones((len(rows.items), 1))], dim=1)
        out = engine.model(input_ids=rows.last[:, None], attention_mask=mask, position_ids=rows.positions[:, None],
                           past_key_values=rows.cache, use_cache=True)
        rows.cache, rows.mask = out.past_key_values, mask
        rows.positions += 1
        rows.last = engine.next_tokens(out.logits[:, -1], rows.items)
