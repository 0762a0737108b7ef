"""An in-process launcher for `execute(..., launcher=inline)`: the engine adapter runs in the stream's
thread instead of a worker process, with the client's semantics (the gate, a fatal error ends the stream
and the requests in flight become errors naming it). For orchestration tests with fake engines: no
process start, no imports paid again, a run in milliseconds. The worker protocol itself is tested
with real processes in tests/test_streams.py and tests/test_robustness_engine.py.

`inline_probe` is the same for a stage-ladder probe: in place of `harness.localize.run.run_probe` (a test
patches it in), the engine's captures are taken in this process. The probe process itself is tested where the
engine under test is vLLM (tests/test_fault_injection.py)."""
from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from harness.core.schema import EngineOutput
from harness.engines.base import EngineSettings, Request, resolve_engine
from harness.engines.client import EngineSide, Gate
from harness.engines.worker import submissions

# Models load one at a time: the streams run in threads of one process here, and transformers'
# `from_pretrained` is not thread-safe (its meta-device init is process-wide: a model loaded while another
# loads can keep a tied output head on the meta device). Real runs start each engine in its own process.
_LOADING = threading.Lock()


def _serialize_model_loads() -> None:
    from transformers import AutoModelForImageTextToText

    load = AutoModelForImageTextToText.from_pretrained

    def locked(*args: Any, **kwargs: Any) -> Any:
        with _LOADING:
            return load(*args, **kwargs)

    AutoModelForImageTextToText.from_pretrained = locked


_serialize_model_loads()


def inline(engine: str, settings: EngineSettings, requests: list[Request], side: EngineSide, progress: Any,
           role: str, stall_s: float = 600.0, restarts: int = 2, deadline: Any = None,
           go: Gate | None = None, log: Any = None) -> Iterator[EngineOutput]:
    if not requests:
        return
    try:
        adapter = resolve_engine(engine)(settings)
        adapter.start(requests)
    except Exception as exc:
        side.fatal = f"engine {engine!r} failed to start: {type(exc).__name__}: {exc}"
        return
    side.info = adapter.info()
    if go is not None and not go.wait():
        side.fatal = "the run ended before this engine could compute"
        return
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


def inline_probe(engine: str, settings: EngineSettings, requests: Sequence[Request], log: Path,
                 timeout_s: float = 0.0) -> tuple[list[dict[str, np.ndarray] | None], list[str | None]]:
    """`run_probe`'s answer without its process: each request's captured arrays (None where it failed) and
    errors; an engine that does not start fails every request, as a probe's fatal error does."""
    try:
        adapter = resolve_engine(engine)(settings)
        adapter.start(requests)
    except Exception as exc:
        return [None] * len(requests), [f"{type(exc).__name__}: {exc}"] * len(requests)
    arrays: list[dict[str, np.ndarray] | None] = []
    errors: list[str | None] = []
    try:
        for request in requests:
            try:
                arrays.append({k: np.asarray(v) for k, v in adapter.capture(request).items()})
                errors.append(None)
            except Exception as exc:  # one request's capture failing leaves the others'
                arrays.append(None)
                errors.append(f"{type(exc).__name__}: {exc}")
    finally:
        adapter.close()
    return arrays, errors
