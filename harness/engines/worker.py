"""The server half: run one engine in its own process and stream its outputs back as JSON lines.

Each engine gets a fresh process so the reference and the engine never hold
the accelerator's memory at the same time, a crash (even a segfault) in one
engine cannot take the harness down, and engine-specific environment (vLLM's
CPU settings) stays out of the harness process. Messages go to a dedicated
file descriptor, so whatever the engine prints to stdout cannot corrupt them.
The client half is `engines.client`.

Protocol, one JSON object per line: {"kind": "info", "info": {...}} once the
engine has started; {"kind": "output", "output": EngineOutput} per request and
attempt; {"kind": "done", "run_s": seconds spent in run()}; or {"kind":
"fatal", "error": "..."} if the engine could not start or broke mid-run.
"""
from __future__ import annotations

import json
import signal
import sys
import time
import traceback
from collections.abc import Iterator, Sequence
from dataclasses import asdict, replace
from typing import IO, Any

from harness.engines.base import Engine, EngineSettings, Request, resolve_engine
from harness.schema import EngineOutput


def submissions(engine: Engine, requests: Sequence[Request]) -> Iterator[EngineOutput]:
    """Submit in rounds, one per attempt: each round sends every batched request of
    that attempt in one submission, then each `alone` request by itself. Attempt
    n+1 comes after attempt n has finished, so a repeat hits the engine's caches."""
    for attempt in range(max((r.repeats for r in requests), default=0)):
        due = [r for r in requests if r.repeats > attempt]
        batched = [r for r in due if r.submit == "batched"]
        groups = ([batched] if batched else []) + [[r] for r in due if r.submit == "alone"]
        for group in groups:
            for output in engine.run(group):
                yield replace(output, attempt=attempt)


def serve(spec: dict[str, Any], out: IO[str]) -> None:
    def send(message: dict[str, Any]) -> None:
        out.write(json.dumps(message) + "\n")
        out.flush()

    requests = [Request.from_dict(r) for r in spec["requests"]]
    phase = "to start"
    engine = None
    try:
        engine = resolve_engine(spec["engine"])(EngineSettings.from_dict(spec["settings"]))
        engine.start(requests)
        send({"kind": "info", "info": engine.info()})
        phase = "mid-run"  # from here, the cases already returned stand
        start = time.perf_counter()
        for output in submissions(engine, requests):
            send({"kind": "output", "output": asdict(output)})
    except Exception as exc:
        traceback.print_exc()
        send({"kind": "fatal", "error": f"engine {spec['engine']!r} failed {phase}: {type(exc).__name__}: {exc}"})
        return
    finally:
        if engine is not None:
            engine.close()
    send({"kind": "done", "run_s": time.perf_counter() - start})


def main() -> None:
    # SIGTERM from the harness (a stalled engine) unwinds through serve()'s finally, which closes the engine.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    spec_path, fd = sys.argv[1], int(sys.argv[2])
    with open(spec_path) as f:
        spec = json.load(f)
    with open(fd, "w") as out:
        serve(spec, out)


if __name__ == "__main__":
    main()
