"""Progress bars for passes that a longer job repeats (each epoch's catalogue refresh and validation, the zero-shot
blend's weights): shown only when a pass turns out slow, and cleared when it ends, so a small shop's training log
stays one line per epoch while a large catalogue's minutes-long passes are never silent."""

from __future__ import annotations

from tqdm.auto import tqdm

SLOW_PASS_SECONDS = 2.0
"""A repeated pass shows its bar once it has run this long."""


def pass_bar(total: int, desc: str, unit: str, enabled: bool = True) -> tqdm:
    """A bar for one repeated pass of `total` `unit`s: drawn after `SLOW_PASS_SECONDS`, removed when closed."""
    return tqdm(total=total, desc=desc, unit=unit, disable=not enabled, leave=False, delay=SLOW_PASS_SECONDS)
