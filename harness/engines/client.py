"""The client half of the engine worker: start an engine in its own process and
yield its outputs as they arrive (see `engines.worker` for the protocol)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
import select
from dataclasses import asdict, dataclass, field
from typing import Any

from harness.engines.base import EngineSettings, Request
from harness.schema import EngineOutput, from_dict

Progress = Callable[[str], None]


def _lines(pipe: Any, stall_s: float) -> Iterator[str | None]:
    """Lines from the worker's pipe; None once nothing arrived for `stall_s` seconds."""
    buffer = b""
    fd = pipe.fileno()
    while True:
        if b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            yield line.decode()
            continue
        ready, _, _ = select.select([fd], [], [], stall_s)
        if not ready:
            yield None
            return
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            return
        buffer += chunk


@dataclass
class EngineSide:
    """Where one engine process stands while the run goes on."""

    info: dict[str, Any] = field(default_factory=dict)
    run_s: float | None = None
    fatal: str | None = None
    tokens: int = 0


def stream(engine: str, settings: EngineSettings, requests: list[Request], side: EngineSide, progress: Progress,
           role: str, stall_s: float = 600.0) -> Iterator[EngineOutput]:
    """Start `engine` in a worker process and yield its outputs as they arrive.

    An engine that sends nothing for `stall_s` seconds (a hung request, a deadlocked
    scheduler) is killed, and the run goes on with what it returned.
    """
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
            for line in _lines(messages, stall_s):
                if line is None:
                    _stop(proc)
                    side.fatal = f"{engine} sent nothing for {stall_s:.0f} s: stalled, stopped"
                    break
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
            _stop(proc)
        os.unlink(f.name)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM first, so the worker closes what its engine started (a server), then SIGKILL."""
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
