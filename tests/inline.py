"""The in-process launcher for `execute(..., launcher=inline)` (`harness.engines.inline`), with transformers'
model loads serialized: for orchestration tests with fake engines or the HF engine, no process start, no
imports paid again, a run in milliseconds. The worker protocol itself is tested
with real processes in tests/test_streams.py and tests/test_robustness_engine.py.

`inline_probe` is the same for a stage-ladder probe: in place of `harness.localize.run.run_probe` (a test
patches it in), the engine's captures are taken in this process. The probe process itself is tested where the
engine under test is vLLM (tests/test_fault_injection.py)."""
from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from harness.engines.base import EngineSettings, Request, resolve_engine
from harness.engines.inline import inline

__all__ = ["inline", "inline_probe"]

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
