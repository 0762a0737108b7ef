"""Run one engine in its own process and stream its outputs back as JSON lines.

Each engine gets a fresh process so the reference and the engine never hold
the accelerator's memory at the same time, a crash (even a segfault) in one
engine cannot take the harness down, and engine-specific environment (vLLM's
CPU settings) stays out of the harness process. Messages go to a dedicated
file descriptor, so whatever the engine prints to stdout cannot corrupt them.

Protocol, one JSON object per line: {"kind": "info", "info": {...}} once the
engine has started; {"kind": "output", "output": EngineOutput} per case;
{"kind": "done", "run_s": seconds spent in run()}; or {"kind": "fatal",
"error": "..."} if the engine could not start.
"""
from __future__ import annotations

import json
import sys
import time
import traceback
from dataclasses import asdict
from typing import IO, Any

from harness.engines.base import ENGINES, EngineSettings, Request


def serve(spec: dict[str, Any], out: IO[str]) -> None:
    def send(message: dict[str, Any]) -> None:
        out.write(json.dumps(message) + "\n")
        out.flush()

    requests = [Request.from_dict(r) for r in spec["requests"]]
    phase = "to start"
    try:
        engine = ENGINES[spec["engine"]](EngineSettings(**spec["settings"]))
        engine.start(requests)
        send({"kind": "info", "info": engine.info()})
        phase = "mid-run"  # from here, the cases already returned stand
        start = time.perf_counter()
        for output in engine.run(requests):
            send({"kind": "output", "output": asdict(output)})
    except Exception as exc:
        traceback.print_exc()
        send({"kind": "fatal", "error": f"engine {spec['engine']!r} failed {phase}: {type(exc).__name__}: {exc}"})
        return
    send({"kind": "done", "run_s": time.perf_counter() - start})


def main() -> None:
    spec_path, fd = sys.argv[1], int(sys.argv[2])
    with open(spec_path) as f:
        spec = json.load(f)
    with open(fd, "w") as out:
        serve(spec, out)


if __name__ == "__main__":
    main()
