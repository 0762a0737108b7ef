"""What a run reports about itself as it goes: its stages' wall time and each engine stream it opens.

The runner, the CLI and `record` call `observer.stage(name)` around each stage of their own and hand
every engine stream they open through `observer.stream(...)`. The default observer keeps the stage
seconds for the run's provenance; `vlm-parity bench` passes one that also records and times the
streams (`harness.bench.probe`), so the bench measures through this interface, never by patching
names, and a stage the runner stops reporting is missing from `seconds` (a test checks `STAGES`).
"""
from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from harness.core.schema import EngineOutput
from harness.engines.base import EngineSettings, Request

# Every stage a run reports, in order: the bench's stage table and its test are derived from this.
STAGES = ("setup", "case_load", "stored_references", "render", "plan", "engines", "decode_deltas", "judge",
          "results_write", "report")


class Observer:
    """Stage wall seconds and call counts, summed over repeats (a stage may nest in another:
    `judge` runs inside `engines`, `decode_deltas` inside `judge`)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start
            self.calls[name] = self.calls.get(name, 0) + 1

    def stream(self, role: str, engine: str, settings: EngineSettings, requests: list[Request],
               outputs: Iterator[EngineOutput], side: Any) -> Iterator[EngineOutput]:
        """The stream of one engine process, as the run will read it (the default changes nothing)."""
        return outputs
