"""The client half of the engine worker: start an engine in its own process, yield its outputs
as they arrive, and start a fresh one when it breaks mid-run (see `engines.worker` for the protocol).

When an engine breaks mid-run (its process killed or crashed, stalled, or its adapter raised):
the outputs it already returned stand; the requests it was working on (its last submission)
become errors naming the cause, and are not sent again: such a request may be what broke the
engine, and re-sending it would spend the restarts on it and hide a crash that is the engine's
to fix. A fresh worker then runs every request not yet submitted, at most `restarts` times per
stream. An engine that fails to start is not restarted (a wrong option or checkpoint fails the
same way twice), and neither is one stopped by the run's deadline (`--run-timeout`).
"""
from __future__ import annotations

import enum
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from harness.core.schema import EngineOutput, from_dict
from harness.engines import lifetime
from harness.engines.base import EngineSettings, Request
from harness.engines.worker import Key

Progress = Callable[[str], None]


class _Silence(enum.Enum):
    """Why no line came: the engine went quiet for the stall timeout, or the run's deadline passed."""

    STALLED = "stalled"
    OVERDUE = "overdue"


@dataclass
class Deadline:
    """The run's time budget: past it the running engine is stopped and no other one starts."""

    seconds: float
    at: float = field(init=False)

    def __post_init__(self) -> None:
        self.at = time.monotonic() + self.seconds

    def left(self) -> float:
        return self.at - time.monotonic()

    def reason(self) -> str:
        return f"run timeout of {self.seconds:g} s reached"


# How long an engine may take to start (import, load, compile) before it is given up on: start-up is not
# a stall, so the stall timeout counts from the engine's first message, and a slow start has its own bound.
START_S = 900.0


def _lines(pipe: Any, stall_s: float, deadline: Deadline | None,
           worker: _Worker | None = None) -> Iterator[str | _Silence]:
    """Lines from the worker's pipe; then a _Silence if it went quiet or the deadline passed, or nothing at its end.
    Until `worker` has started, the silence allowed is the start-up bound, not the stall timeout."""
    buffer = b""
    fd = pipe.fileno()
    while True:
        if b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            yield line.decode()
            continue
        if deadline is not None and deadline.left() <= 0:
            yield _Silence.OVERDUE
            return
        quiet = stall_s if worker is None or worker.started else max(stall_s, START_S)
        wait = quiet if deadline is None else min(quiet, deadline.left())
        ready, _, _ = select.select([fd], [], [], wait)
        if not ready:
            yield _Silence.OVERDUE if deadline is not None and deadline.left() <= 0 else _Silence.STALLED
            return
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            return
        buffer += chunk


class Gate:
    """When an engine that started early may compute: opened when the job before it has finished,
    cancelled when the run ended first (the engine then closes without computing). A stream started before
    its requests were known (`stream`'s `requests=None`: the reference scoring answers not yet given) gets them
    with the opening."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._cancelled = False
        self.requests: list[Request] | None = None

    def open(self, requests: list[Request] | None = None) -> None:
        if requests is not None:
            self.requests = requests
        self._event.set()

    def cancel(self) -> None:
        self._cancelled = True
        self._event.set()

    def is_open(self) -> bool:
        return self._event.is_set() and not self._cancelled

    def wait(self) -> bool:
        """Block until opened or cancelled; True when the engine may compute."""
        self._event.wait()
        return not self._cancelled


@dataclass
class EngineSide:
    """Where one engine stands while the run goes on, over all its worker processes."""

    info: dict[str, Any] = field(default_factory=dict)
    run_s: float | None = None  # the last worker's time in run(), once it finished
    fatal: str | None = None  # why the engine was given up on: its unfinished requests are errors
    tokens: int = 0  # output tokens of the last worker (with run_s: its throughput)
    restarts: int = 0
    faults: list[str] = field(default_factory=list)  # each mid-run breakdown, in order


@dataclass
class _Worker:
    """What one worker process did before it ended."""

    started: bool = False
    submitted: set[Key] = field(default_factory=set)
    in_flight: list[Key] = field(default_factory=list)
    finished: bool = False
    fault: str | None = None
    final: bool = False  # a fault no restart can help (the run's deadline)
    deferred: bool = False  # its requests go with the go line (the gate's, once it opens)


def stream(engine: str, settings: EngineSettings, requests: list[Request] | None, side: EngineSide, progress: Progress,
           role: str, stall_s: float = 600.0, restarts: int = 2,
           deadline: Deadline | None = None, go: Gate | None = None, log: Path | None = None) -> Iterator[EngineOutput]:
    """Start `engine` in a worker process and yield its outputs as they arrive.

    An engine that sends nothing for `stall_s` seconds once started (a hung request, a
    deadlocked scheduler) is stopped; like one that died, its in-flight requests become
    errors and a fresh one (up to `restarts`) runs the rest. The worker's own stdout and
    stderr (the engine's logs and warnings) go to `log`, appended across restarts
    (None: to this process's). `requests` None: they come with `go`'s opening (the engine starts, and waits
    for them).
    """
    if requests is not None and not requests:
        return
    assert requests is not None or go is not None, "requests come with the gate's opening"
    settled: set[Key] = set()  # returned, or given up as in flight: never sent again
    while True:
        if deadline is not None and deadline.left() <= 0:
            side.fatal = f"{deadline.reason()} before {engine} {'restarted' if side.restarts else 'started'}"
            return
        worker = _Worker()
        yield from _run_worker(engine, settings, requests, settled, side, progress, role, stall_s, deadline, worker,
                               go, log)
        if worker.fault is None:  # finished
            return
        if requests is None:  # given with the gate's opening, or never (it was cancelled)
            requests = (go.requests if go is not None else None) or []
        keys = [(r.case_id, r.variant, attempt) for r in requests for attempt in range(r.repeats)]
        if not worker.started:
            side.fatal = worker.fault + (f" (after {side.restarts} restarts)" if side.restarts else "")
            return
        side.faults.append(worker.fault)
        cause = worker.fault.rstrip(".")
        for case_id, variant, attempt in worker.in_flight:
            if (case_id, variant, attempt) not in settled:
                settled.add((case_id, variant, attempt))
                yield EngineOutput.failed(case_id, engine, f"{cause} while this case was in flight", variant, attempt)
        settled |= worker.submitted  # an earlier submission's missing output is not re-sent either
        left = sum(key not in settled for key in keys)
        if not left:
            return
        if worker.final:
            side.fatal = worker.fault
            return
        if side.restarts >= restarts:
            side.fatal = f"{cause}; no restarts left (--engine-restarts {restarts}) for {left} more requests"
            return
        side.restarts += 1
        progress(f"[{role}] {cause}; restart {side.restarts}/{restarts} for the {left} requests not yet sent")


def _run_worker(engine: str, settings: EngineSettings, requests: list[Request] | None, settled: set[Key],
                side: EngineSide, progress: Progress, role: str, stall_s: float, deadline: Deadline | None,
                worker: _Worker, go: Gate | None = None, log: Path | None = None) -> Iterator[EngineOutput]:
    """One worker process over the requests not yet settled; what happened is left in `worker`.

    With `go` not yet set, the engine starts now but computes only once `go` is set: its start-up
    overlaps another engine's work while their computing stays one at a time."""
    held = go if go is not None and not go.is_open() else None
    if requests is None and held is None:  # the gate opened before this worker started: they are known
        requests = (go.requests if go is not None else None) or []
    worker.deferred = requests is None  # they go down the pipe with the go line
    total = None if requests is None else sum(r.repeats for r in requests)
    progress(f"[{role}] starting {engine} ({settings.model}, {settings.dtype}, {settings.device}) "
             f"for {'the requests it will be given' if total is None else f'{total - len(settled)} requests'}")
    spec = {"engine": engine, "settings": asdict(settings), "requests": [asdict(r) for r in requests or []],
            "skip": sorted(settled), "parent": os.getpid(), "wait": held is not None, "deferred": worker.deferred}
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(spec, f)
    read_fd, write_fd = os.pipe()
    proc = None
    output_file = _open_log(log)
    try:
        proc = lifetime.start([sys.executable, "-m", "harness.engines.worker", f.name, str(write_fd)],
                              pass_fds=(write_fd,), stdin=subprocess.PIPE if held else None,
                              stdout=output_file, stderr=subprocess.STDOUT if output_file else None)
        os.close(write_fd)
        with open(read_fd) as messages:
            for line in _lines(messages, stall_s, deadline, worker):
                if isinstance(line, _Silence):
                    lifetime.end(proc)
                    worker.fault, worker.final = ((f"{engine} sent nothing for {stall_s:g} s (stalled) and was stopped",
                                                   False) if line is _Silence.STALLED
                                                  else (deadline.reason() if deadline else "overdue", True))
                    break
                output = _on_message(json.loads(line), proc, worker, side, held, settled)
                if worker.final:  # the gate was cancelled: the run ended before this engine could compute
                    break
                if output is not None:
                    status = f"error: {output.error}" if output.error else "ok"
                    progress(f"[{role}] {len(settled)}/{total or '?'} {output.case_id} {output.variant} {status}")
                    yield output
        lifetime.wait(proc)
        code = lifetime.end(proc)  # also whatever the worker left behind (a crashed worker's engine core)
        if worker.fault is None and not worker.finished:
            worker.fault = _exit_cause(code)
    finally:
        if proc is not None and proc.returncode is None:  # the harness itself broke: no orphan engine
            lifetime.end(proc)
        if output_file is not None:
            output_file.close()
        os.unlink(f.name)


def _open_log(log: Path | None) -> IO[bytes] | None:
    if log is None:
        return None
    log.parent.mkdir(parents=True, exist_ok=True)
    return open(log, "ab")


def _on_message(message: dict[str, Any], proc: subprocess.Popen[bytes], worker: _Worker, side: EngineSide,
                held: Gate | None, settled: set[Key]) -> EngineOutput | None:
    """One protocol message into the worker's and the side's state; an output is returned to be yielded."""
    kind = message["kind"]
    if kind == "info":
        side.info, side.tokens, worker.started = message["info"], 0, True
        if held is not None:  # started early: compute once the job before it has finished
            _release(proc, worker, held)
    elif kind == "submitted":
        worker.in_flight = [(c, v, a) for c, v, a in message["keys"]]
        worker.submitted.update(worker.in_flight)
    elif kind == "fatal":
        worker.fault = message["error"]
    elif kind == "done":
        side.run_s, worker.finished = message["run_s"], True
    else:
        output = from_dict(EngineOutput, message["output"])
        settled.add((output.case_id, output.variant, output.attempt))
        side.tokens += 0 if output.error else len(output.output_ids)
        return output
    return None


def _release(proc: subprocess.Popen[bytes], worker: _Worker, go: Gate) -> None:
    """Wait for the gate, then tell the held worker to compute (with its requests, when they came with the gate);
    a cancelled gate closes it instead."""
    assert proc.stdin is not None
    proceed = go.wait()
    given = json.dumps([asdict(r) for r in go.requests or []]) + "\n" if worker.deferred else ""
    try:
        proc.stdin.write(f"go\n{given}".encode() if proceed else b"")
        proc.stdin.close()  # without a go line the worker closes its engine and exits
    except OSError:  # it died while it waited: read on to its exit status
        pass
    if not proceed:
        lifetime.end(proc)
        worker.fault, worker.final = "the run ended before this engine could compute", True


def _exit_cause(code: int) -> str:
    """A worker that ended without finishing, in words: the signal that killed it, or its exit code."""
    if code < 0:
        try:
            return f"engine process died ({signal.Signals(-code).name})"
        except ValueError:
            return f"engine process died (signal {-code})"
    return f"engine process exited with code {code} before finishing"
