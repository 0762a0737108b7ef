"""Engine processes end with the harness, however it stops: on a GPU their memory is the next job's.

The harness starts each engine worker and probe as the leader of a process group of its own (`start`), so
the process and whatever it starts in turn (a server, vLLM's engine-core and executor processes, torch's
compile workers, vLLM's model-registry subprocess) end together, by one SIGKILL to the group:

- when its stream ends, or the harness stops it (a stall, the run's deadline, a harness error): `end`;
- when the harness receives SIGTERM (CI cancelling a job) or SIGINT: `ending_on_signals`, around a command;
- when the harness is killed outright and runs no code of its own, each started process ends its own group
  (`bind`): the kernel sends it SIGTERM as its parent dies (PR_SET_PDEATHSIG), and a thread sees that its
  parent has changed (it was handed to init). Either one suffices; the handler runs in the main thread, the
  thread whenever the main one lets go of the interpreter (a torch op does).
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from types import FrameType
from typing import Any

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
WATCH_S = 0.5  # how often a started process looks whether the harness is still its parent
_groups: set[int] = set()  # groups this process started and has not ended (their leaders' pids)
_stopping = threading.Event()  # a stop signal came: no engine starts any more (a stream's restart)


def start(command: list[str], **popen: Any) -> subprocess.Popen[bytes]:
    """`command` as the leader of a new process group (a session of its own, so a terminal's Ctrl-C reaches
    only the harness, which ends the group)."""
    if _stopping.is_set():
        raise RuntimeError("the harness is stopping: no engine process starts")
    proc: subprocess.Popen[bytes] = subprocess.Popen(command, start_new_session=True, **popen)
    _groups.add(proc.pid)
    return proc


def wait(proc: subprocess.Popen[bytes], timeout: float | None = None) -> bool:
    """Whether `proc` exited (within `timeout` seconds; None: however long). It is left unreaped: while its
    pid is not free, no other group can take that id, so `end` signals only what `proc` left behind."""
    if proc.returncode is not None:
        return True
    if timeout is None:
        os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
        return True
    deadline = time.monotonic() + timeout
    while os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT | os.WNOHANG) is None:
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.2)
    return True


def end(proc: subprocess.Popen[bytes]) -> int:
    """SIGKILL `proc`'s group (`proc` itself if still running, and anything it left), reap it, return its
    exit status."""
    if proc.returncode is None:  # not reaped: the group id is still its
        _kill_group(proc.pid)
    _groups.discard(proc.pid)
    return proc.wait()


@contextlib.contextmanager
def ending_on_signals() -> Iterator[None]:
    """Within this block, SIGTERM and SIGINT first end every group this process started, then do what they
    did before (SIGINT raises KeyboardInterrupt; SIGTERM ends the process, by SIGTERM). A signal that was
    ignored stays ignored; outside the main thread, where handlers cannot be set, nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}

    def stop(signum: int, frame: FrameType | None) -> None:
        _stopping.set()
        for group in tuple(_groups):
            _kill_group(group)
        previous = before[signum]
        if callable(previous):
            previous(signum, frame)
        else:  # the default action, which is to end this process by the same signal
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)

    mine = [s for s, previous in before.items() if previous not in (signal.SIG_IGN, None)]
    for signum in mine:
        signal.signal(signum, stop)
    try:
        yield
    finally:
        for signum in mine:
            signal.signal(signum, before[signum])
        _stopping.clear()


def bind(parent: int) -> None:
    """In a process the harness (pid `parent`) started: end this process and its group once the harness is
    gone. Call first thing; a harness that died before is caught at once."""
    signal.signal(signal.SIGTERM, lambda *_: _end_own_group("SIGTERM"))
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: the thread alone
        pass
    threading.Thread(target=_watch, args=(parent,), name="harness-watch", daemon=True).start()


def _watch(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(WATCH_S)
    _end_own_group("the harness is gone")


def _end_own_group(why: str) -> None:
    try:
        os.write(2, f"vlm-parity engine process {os.getpid()}: {why}; ending it and its process group\n".encode())
    except OSError:
        pass
    if os.getpgrp() == os.getpid():  # started by `start`: never a shell's job group
        os.killpg(0, signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)


def _kill_group(group: int) -> None:
    try:
        os.killpg(group, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):  # already gone
        pass
