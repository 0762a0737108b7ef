"""Peak resident memory of a process tree: the harness process and every engine worker it starts.

The engines run in child processes (and vLLM may start its own), so the memory
a run needs is the sum over the whole tree, sampled while it runs. RSS counts
shared pages (libraries, torch) once per process, so the sum is an upper bound.
"""
from __future__ import annotations

import threading
from pathlib import Path
from types import TracebackType

try:
    import psutil
except ImportError:  # psutil comes with vLLM; without it memory is reported unavailable
    psutil = None


def tree_rss(pid: int) -> int:
    """Sum of RSS in bytes of `pid` and all its descendants alive now; 0 once `pid` is gone."""
    return sum(rss for _, _, rss, _ in tree_processes(pid))


def tree_processes(pid: int) -> list[tuple[int, str, int, float]]:
    """(pid, what it runs, RSS in bytes, CPU seconds so far) for `pid` and every descendant alive now."""
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []
    found = []
    for process in processes:
        try:
            with process.oneshot():
                cpu = process.cpu_times()
                found.append((process.pid, _label(process.cmdline()) or process.name(), process.memory_info().rss,
                              cpu.user + cpu.system))
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):  # ended meanwhile
            continue
    return found


def _label(cmdline: list[str]) -> str:
    """A short name for a process: the module of `python -m MODULE`, else the program and its first argument."""
    if "-m" in cmdline[:-1]:
        return cmdline[cmdline.index("-m") + 1]
    return " ".join(Path(part).name for part in cmdline[:2])


class PeakSampler:
    """Samples the process tree of `pid` every `interval_s` in a thread: `peak` is the largest sum seen,
    `peaks` the largest RSS of each process ("PID NAME" -> bytes), to say which one grows, and `cpu` each
    one's CPU seconds when last seen (up to `interval_s` short of its end), to say which one works.

    `sample()` can also be called directly, which is how a test checks it without timing.
    """

    def __init__(self, pid: int, interval_s: float = 0.25) -> None:
        self.pid, self.interval_s = pid, interval_s
        self.peak = 0
        self.peaks: dict[str, int] = {}
        self.cpu: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    @staticmethod
    def available() -> bool:
        return psutil is not None

    def sample(self) -> int:
        processes = tree_processes(self.pid)
        for pid, name, rss, cpu in processes:
            key = f"{pid} {name}"
            self.peaks[key] = max(self.peaks.get(key, 0), rss)
            self.cpu[key] = cpu
        now = sum(rss for _, _, rss, _ in processes)
        self.peak = max(self.peak, now)
        return now
    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval_s)

    def __enter__(self) -> PeakSampler:
        if self.available():
            self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
