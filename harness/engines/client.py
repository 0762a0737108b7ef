"""The client half of the engine worker: start an engine in its own process and
yield its outputs as they arrive (see `engines.worker` for the protocol)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from harness.engines.base import EngineSettings, Request
from harness.schema import EngineOutput, from_dict

Progress = Callable[[str], None]


@dataclass
class EngineSide:
    """Where one engine process stands while the run goes on."""

    info: dict[str, Any] = field(default_factory=dict)
    run_s: float | None = None
    fatal: str | None = None
    tokens: int = 0


def stream(engine: str, settings: EngineSettings, requests: list[Request], side: EngineSide, progress: Progress,
           role: str) -> Iterator[EngineOutput]:
    """Start `engine` in a worker process and yield its outputs as they arrive."""
    if not requests:
        return
    progress(f"[{role}] starting {engine} ({settings.model}, {settings.dtype}, {settings.device}) "
             f"for {len(requests)} requests")
    spec = {"engine": engine, "settings": asdict(settings), "requests": [asdict(r) for r in requests]}
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(spec, f)
    read_fd, write_fd = os.pipe()
    proc = None
    try:
        proc = subprocess.Popen([sys.executable, "-m", "harness.engines.worker", f.name, str(write_fd)],
                                pass_fds=(write_fd,))
        os.close(write_fd)
        total = sum(r.repeats for r in requests)
        done = 0
        with open(read_fd) as messages:
            for line in messages:
                message = json.loads(line)
                if message["kind"] == "info":
                    side.info = message["info"]
                elif message["kind"] == "fatal":
                    side.fatal = message["error"]
                elif message["kind"] == "done":
                    side.run_s = message["run_s"]
                else:
                    output = from_dict(EngineOutput, message["output"])
                    done += 1
                    side.tokens += 0 if output.error else len(output.output_ids)
                    status = f"error: {output.error}" if output.error else "ok"
                    progress(f"[{role}] {done}/{total} {output.case_id} {output.variant} {status}")
                    yield output
        code = proc.wait()
        if code != 0 and side.fatal is None and side.run_s is None:
            side.fatal = f"{engine} process exited with code {code}"
    finally:
        if proc is not None and proc.poll() is None:  # the harness itself broke (or Ctrl-C): no orphan engine
            proc.kill()
            proc.wait()
        os.unlink(f.name)
