"""The server half: run one engine in its own process and stream its outputs back as JSON lines.

Each engine gets a fresh process so the reference and the engine never hold
the accelerator's memory at the same time, a crash (even a segfault) in one
engine cannot take the harness down, and engine-specific environment (vLLM's
CPU settings) stays out of the harness process. Messages go to a dedicated
file descriptor, so whatever the engine prints to stdout cannot corrupt them.
The client half is `engines.client`.

Protocol, one JSON object per line: {"kind": "info", "info": {...}} once the
engine has started; {"kind": "submitted", "keys": [[case_id, variant,
attempt], ...]} before each submission (what is in flight, should the engine
die under it); {"kind": "output", "output": EngineOutput} per request and
attempt; {"kind": "done", "run_s": seconds spent in run()}; or {"kind":
"fatal", "error": "..."} if the engine could not start or broke mid-run.
The spec's `skip` lists the keys a previous worker already settled, so a
restarted engine runs only what is left. The worker, and whatever its engine
starts, ends with the harness however the harness stops (`engines.lifetime`).
"""
from __future__ import annotations

import json
import sys
import time
import traceback
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import replace
from typing import IO, Any

from harness.core.schema import EngineOutput, plain
from harness.engines import lifetime
from harness.engines.base import Engine, EngineSettings, Request, resolve_engine

Key = tuple[str, str, int]  # (case id, variant, attempt): one output of a run


def submissions(engine: Engine, requests: Sequence[Request], skip: Collection[Key] = (),
                announce: Callable[[list[Key]], None] = lambda keys: None) -> Iterator[EngineOutput]:
    """Submit in rounds, one per attempt: each round sends every batched request of
    that attempt in one submission, then each `alone` request by itself. Attempt
    n+1 comes after attempt n has finished, so a repeat hits the engine's caches
    (not across a restart: a fresh engine starts with empty caches).
    `announce` hears each submission's keys before it is sent."""
    for attempt in range(max((r.repeats for r in requests), default=0)):
        due = [r for r in requests if r.repeats > attempt and (r.case_id, r.variant, attempt) not in skip]
        batched = [r for r in due if r.submit == "batched"]
        groups = ([batched] if batched else []) + [[r] for r in due if r.submit == "alone"]
        for group in groups:
            announce([(r.case_id, r.variant, attempt) for r in group])
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
        if spec.get("wait") and not sys.stdin.readline():  # started early; compute when the harness says go
            return  # the harness closed the pipe without a go: it is gone or gave up on this engine
        if spec.get("deferred"):  # its requests were not known when it started: they follow the go line
            requests = [Request.from_dict(r) for r in json.loads(sys.stdin.readline())]
        phase = "mid-run"  # from here, the cases already returned stand
        start = time.perf_counter()
        skip = {(c, v, a) for c, v, a in spec.get("skip", [])}
        for output in submissions(engine, requests, skip, lambda keys: send({"kind": "submitted", "keys": keys})):
            send({"kind": "output", "output": plain(output, columns=True)})
    except Exception as exc:
        traceback.print_exc()
        send({"kind": "fatal", "error": f"engine {spec['engine']!r} failed {phase}: {type(exc).__name__}: {exc}"})
        return
    finally:
        if engine is not None:
            engine.close()
    send({"kind": "done", "run_s": time.perf_counter() - start})


def main() -> None:
    spec_path, fd = sys.argv[1], int(sys.argv[2])
    with open(spec_path) as f:
        spec = json.load(f)
    lifetime.bind(spec["parent"])
    with open(fd, "w") as out:
        serve(spec, out)


if __name__ == "__main__":
    main()
