"""The cyclic garbage collector, kept to young objects while a run holds many.

A run holds outputs waiting for their case (`harness.run.spool`: up to hundreds of thousands of positions, a
dozen Python objects each) and makes as many as it frees. CPython's full collections scan every live object
and are triggered by allocation: on a 1,000-case run they cost more than the judging (measured: the harness's
own CPU time halved without them, `vlm-parity bench --parts scale`). Nothing the run keeps forms cycles (its
outputs are trees of plain data, freed by reference counting), so while a run is going only young objects are
collected, a full collection runs every `EVERY` cases (whatever cyclic garbage did grow old is freed), and
the collector is as it was once the run ends.
"""
from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

EVERY = 200  # cases between full collections


@contextmanager
def young_only() -> Iterator[None]:
    """Full collections off for the block (young ones as usual), one full collection after it."""
    before = gc.get_threshold()
    gc.set_threshold(before[0], before[1], 10**9)
    try:
        yield
    finally:
        gc.set_threshold(*before)
        gc.collect()


def now_and_then(done: int) -> None:
    """A full collection every `EVERY` cases (`done`: cases finished so far)."""
    if done and done % EVERY == 0:
        gc.collect()
