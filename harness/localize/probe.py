"""The probe: one engine (or the reference) started once, each request's prefill captured with hooks.

Run in its own process (`python -m harness.localize.probe SPEC.json`), like every engine the harness starts,
so a probe that crashes takes nothing with it; it ends with the harness however that stops (`engines.lifetime`).
The engine core runs in this process (VLLM_ENABLE_V1_MULTIPROCESSING=0) and eagerly, so hooks reach the model.
Each request's arrays go to `<out>/<index>.npz` (plain arrays: read back without pickle); `status.json` says,
per request, "ok" or the error, and is written last.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from harness.engines import lifetime
from harness.engines.base import EngineSettings, Request, resolve_engine

PROBE_ENV = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0"}


def probe(spec: dict[str, Any]) -> dict[str, str]:
    out = Path(spec["out"])
    out.mkdir(parents=True, exist_ok=True)
    settings = EngineSettings.from_dict(spec["settings"])
    requests = [Request.from_dict(r) for r in spec["requests"]]
    engine = resolve_engine(spec["engine"])(settings)
    status: dict[str, str] = {}
    try:
        engine.start(requests)
        for index, request in enumerate(requests):
            try:
                np.savez(out / f"{index}.npz", **engine.capture(request))
                status[str(index)] = "ok"
            except Exception as exc:  # one request's probe failing leaves the others'
                status[str(index)] = f"{type(exc).__name__}: {exc}"
    finally:
        engine.close()
    return status


def main(argv: list[str] | None = None) -> int:
    os.environ.update(PROBE_ENV)
    spec_path = Path((argv or sys.argv[1:])[0])
    spec = json.loads(spec_path.read_text())
    lifetime.bind(spec["parent"])
    try:
        status = probe(spec)
    except Exception as exc:  # the engine did not start
        status = {"fatal": f"{type(exc).__name__}: {exc}"}
    (Path(spec["out"]) / "status.json").write_text(json.dumps(status))
    return 0 if "fatal" not in status else 2


if __name__ == "__main__":
    sys.exit(main())
