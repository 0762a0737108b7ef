"""An in-process launcher for `execute(..., launcher=inline)`: the engine adapter runs in the stream's thread
instead of a worker process, with the client's semantics (the gate, a fatal error ends the stream and the
requests in flight become errors naming it). For engines that need no process of their own: the test suite's
fake engines (`tests/inline.py`), and the bench's synthetic engine (`harness.bench.scale`), whose outputs
would otherwise cross a pipe as JSON and measure the pipe rather than the harness."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from harness.core.schema import EngineOutput
from harness.engines.base import EngineSettings, Request, resolve_engine
from harness.engines.client import EngineSide, Gate
from harness.engines.worker import submissions


def inline(engine: str, settings: EngineSettings, requests: list[Request] | None, side: EngineSide, progress: Any,
           role: str, stall_s: float = 600.0, restarts: int = 2, deadline: Any = None,
           go: Gate | None = None, log: Any = None) -> Iterator[EngineOutput]:
    """`requests` None: they come with `go`'s opening (as `harness.engines.client.stream`'s)."""
    if requests is not None and not requests:
        return
    try:
        adapter = resolve_engine(engine)(settings)
        adapter.start(requests or [])
    except Exception as exc:
        side.fatal = f"engine {engine!r} failed to start: {type(exc).__name__}: {exc}"
        return
    side.info = adapter.info()
    if go is not None and not go.wait():
        side.fatal = "the run ended before this engine could compute"
        return
    if requests is None:
        requests = (go.requests if go is not None else None) or []
    in_flight: list[tuple[str, str, int]] = []
    try:
        for output in submissions(adapter, requests, announce=lambda keys: in_flight.__init__(keys)):
            side.tokens += len(output.output_ids)
            yield output
        side.run_s = 0.0
    except Exception as exc:
        side.fatal = f"engine {engine!r} failed mid-run: {type(exc).__name__}: {exc}"
        for case_id, variant, attempt in in_flight:
            yield EngineOutput.failed(case_id, engine, f"{side.fatal} while this case was in flight", variant, attempt)
    finally:
        adapter.close()
