"""One measured subprocess: wall time from spawn to exit, CPU time and peak memory of its
process tree, and the JSON its probe wrote. Start-up is part of what is measured, so every
figure comes from a fresh interpreter. CPU seconds move less than wall seconds when other
work shares the machine, so they are kept beside them."""
from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.bench.memory import PeakSampler
from harness.engines import lifetime


@dataclass
class Measured:
    """What one subprocess cost; `report` is its probe's JSON (empty for a plain command)."""

    label: str
    wall_s: float
    peak_mb: float | None  # None: memory could not be sampled (no psutil)
    exit_code: int
    report: dict[str, Any] = field(default_factory=dict)
    log: str = ""  # where its output went
    walls_s: list[float] = field(default_factory=list)  # every try, when measured more than once
    cpu_s: float | None = None  # user + system seconds of the whole process tree
    peak_by_process_mb: dict[str, float] = field(default_factory=dict)  # "PID NAME" -> its own peak RSS
    cpu_by_process_s: dict[str, float] = field(default_factory=dict)  # "PID NAME" -> its CPU seconds, sampled

    @property
    def ok(self) -> bool:
        """It ran to the end: the probe exited 0 and the run in it, if any, completed (its exit 1 is
        a completed run in which some case failed: still a full run to time)."""
        return self.exit_code == 0 and self.report.get("exit", 0) in (0, 1)


def measure(label: str, command: list[str], log_dir: Path, env: dict[str, str] | None = None,
            report: bool = True) -> Measured:
    """Run `command` (with `--report FILE` appended when `report`), its output to `log_dir/label.log`."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"{label}.log"
    with tempfile.TemporaryDirectory() as tmp:
        report_file = Path(tmp) / "report.json"
        full = [*command[:_probe_args_end(command)], "--report", str(report_file),
                *command[_probe_args_end(command):]] if report else command
        with open(log, "w") as out:
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            start = time.perf_counter()
            proc = lifetime.start(full, stdout=out, stderr=subprocess.STDOUT, env=env)  # ends with the bench
            with PeakSampler(proc.pid) as sampler:
                lifetime.wait(proc)
                code = lifetime.end(proc)  # and whatever it left running
            wall = time.perf_counter() - start
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
        data = json.loads(report_file.read_text()) if report and report_file.is_file() else {}
    peak = sampler.peak / 2**20 if PeakSampler.available() else None
    # Descendants are counted once reaped, and each process here waits for its own: the whole tree.
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return Measured(label, wall, peak, code, data, str(log), cpu_s=cpu,
                    peak_by_process_mb={name: rss / 2**20 for name, rss in sampler.peaks.items()},
                    cpu_by_process_s=sampler.cpu)


def probe(mode: str, *args: str) -> list[str]:
    """The command line of a probe subprocess (see `harness.bench.probe`)."""
    return [sys.executable, "-m", "harness.bench.probe", mode, *args]


def _probe_args_end(command: list[str]) -> int:
    """Where `--report` goes: before a `--` that starts the run's own arguments."""
    return command.index("--") if "--" in command else len(command)
