"""Bitwise-repeatable CPU training: torch's deterministic algorithms for the span of one run.

On CPU, some backward passes accumulate with several threads in whatever order they finish (torch lists indexing
with index tensors and `index_put(accumulate=True)` among them; the towers index item vectors by history), so two
runs with the same seed can differ by ~1e-7 (the quickstart's did). That is enough to move a re-ranker's early
stopping on a small shop. `deterministic_algorithms(True)` switches torch to its deterministic implementations and
restores the previous global setting afterwards.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def deterministic_algorithms(enabled: bool) -> Iterator[None]:
    """Within the block, torch uses deterministic algorithms when `enabled` (warning, not failing, on an op that
    has none); the process-wide setting is restored on exit. `enabled=False` leaves everything as it is."""
    if not enabled:
        yield
        return
    before, warn_only = torch.are_deterministic_algorithms_enabled(), \
        torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before, warn_only=warn_only)
