"""What a run shows the person who started it: a live progress bar per engine stream, a line per case
that does not pass (with its first finding), and a short closing summary. Everything else (each
request, engine start-up, third-party warnings) goes to the run's logs, or to the console with
`--verbose`.

On a terminal the bars are rich's live display; in a CI log (no TTY) each stream prints a few plain
lines instead (started, half way, done). The runner talks to a `Console` in events; a plain callable
given as `progress` (tests, the pytest plugin) gets the same events as text lines.
"""
from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from rich.console import Console as RichConsole
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from harness.core.schema import VERDICTS, CaseResult, RunResult
from harness.judging.explain import case_lines, ladder_text, run_lines
from harness.judging.suite import drifting, shift_text

# A group's colour by its level: an error bold red, a failure red, a warning (drift, a known record to look at)
# yellow.
GROUP_COLOURS = {"fail": "red", "drift": "yellow", "new-known": "yellow", "xpass": "yellow"}
from harness.publish.attention import attention, case_headline, group_title, headline, known_records

Lines = Callable[[str], None]


class Console:
    """The run's console. `verbose` also shows every per-request line and the engines' own output."""

    def __init__(self, verbose: bool = False, file: IO[str] | None = None) -> None:
        self.verbose = verbose
        self.out = RichConsole(file=file or sys.stdout, highlight=False, soft_wrap=True)
        self.live = self.out.is_terminal
        self.progress: Progress | None = None
        self.tasks: dict[str, TaskID] = {}
        self.counts: dict[str, tuple[int, int]] = {}  # plain mode: done, total per stream
        self.roles: dict[str, str] = {}

    # -- lines ---------------------------------------------------------------------------------------
    def __call__(self, line: str) -> None:
        """A line about the run's mechanics (engine start, restart, each request): shown with --verbose."""
        if self.verbose:
            self.print(line)

    def print(self, line: str, style: str | None = None) -> None:
        (self.progress.console if self.progress else self.out).print(line, style=style, markup=False)

    def warn(self, line: str) -> None:
        self.print(f"WARN  {line}", "yellow")

    # -- streams -------------------------------------------------------------------------------------
    def stream_opened(self, source: str, role: str, total: int) -> None:
        if not total:
            return
        self.roles[source] = _short(role)
        if self.live:
            if self.progress is None:
                self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                         TextColumn("{task.fields[last]}"), TimeElapsedColumn(), console=self.out,
                                         transient=False)
                self.progress.start()
            self.tasks[source] = self.progress.add_task(_short(role), total=total, last="")
        else:
            self.counts[source] = (0, total)
            self.print(f"[{_short(role)}] {total} requests")

    def output(self, source: str, case_id: str, variant: str, error: str | None) -> None:
        if source in self.tasks and self.progress is not None:
            self.progress.update(self.tasks[source], advance=1, last=f"{variant} {case_id}")
        elif source in self.counts:
            done, total = self.counts[source]
            self.counts[source] = (done + 1, total)
            if not self.verbose and (done + 1 == total or (done + 1) * 2 == total - total % 2):
                self.print(f"[{self.roles[source]}] {done + 1}/{total}")

    def stream_closed(self, source: str, role: str, fatal: str | None, log: Path | None) -> None:
        if fatal:
            self.print(f"ENGINE FAILED [{_short(role)}]: {fatal}", "bold red")
            if log is not None and log.is_file():
                for line in log.read_text(errors="replace").splitlines()[-15:]:
                    self.print(f"    | {line}", "dim")
                self.print(f"    full log: {log}")

    # -- cases and the end ---------------------------------------------------------------------------
    def case(self, result: CaseResult) -> None:
        """A case that fails or errors gets a line (with its first reason); a known failure is gathered under
        its record, said once at the end; a passing case shows only with --verbose."""
        if result.verdict in ("pass", "known") and not self.verbose:
            return
        lines = case_lines(result)
        first = f"  {lines[0]}" if lines else ""
        more = f"  (+{len(lines) - 1} more)" if len(lines) > 1 else ""
        style = {"fail": "red", "error": "bold red", "known": "magenta"}.get(result.verdict)
        self.print(f"{result.verdict.upper():5} {result.case_id}{first}{more}", style)

    def note(self, line: str) -> None:
        """A step of the run the user waits on (the probes after the engines)."""
        self.print(line, "dim")

    def ladder(self, result: CaseResult) -> None:
        """Where a failing case first differs, after its failure line."""
        ladder = result.ladder
        if ladder is None:
            return
        cell = result.variants.get(ladder.variant)
        failed = cell is not None and cell.verdict == "fail"
        self.print(f"WHERE {result.case_id} on {ladder.variant}: {ladder_text(ladder, failed)}",
                   "red" if failed else None)

    def finish(self, run: RunResult, report: Path | None, regressions: list[str], diagnosis: list[str],
               wall_s: float | None) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
        self.out.print(summary_table(run))
        for record in known_records(run):
            self.print(f"KNOWN ({len(record.cases)} case{'s' * (len(record.cases) > 1)}; "
                       f"{', '.join(record.variants)}) {_short(record.title, 160)}", "magenta")
        groups = attention(run)
        for group in groups[:8]:
            cases = ", ".join(group.cases[:4]) + (", ..." if len(group.cases) > 4 else "")
            self.print(f"{group.level.upper():5} ({len(group.cells)} cell{'s' * (len(group.cells) > 1)} in "
                       f"{len(group.cases)} case{'s' * (len(group.cases) > 1)}: {cases}) {group_title(group)}: "
                       f"{_short(group.line, 200)}", GROUP_COLOURS.get(group.level, "bold red"))
        if len(groups) > 8:
            self.print(f"... and {len(groups) - 8} more groups (see the report)")
        for shift in drifting(run.suite):
            self.print(f"SUITE DRIFT: {shift_text(shift)}", "bold red")
        for line in diagnosis:
            self.print(f"DIAGNOSIS: {line}")
        for line in regressions:
            self.print(f"REGRESSION: {line}", "bold red")
        for warning in run_lines(run):
            self.warn(warning)
        took = f" in {wall_s:.0f} s" if wall_s is not None else ""
        verdict = {"pass": "green", "fail": "bold red"}.get(run.verdict, "bold red")
        self.print(f"{run.verdict.upper()}: {headline(run)}{took}" + (f"; run error: {run.error}" if run.error else ""),
                   verdict)
        self.print(case_headline(run))
        if report is not None:
            self.print(f"report: {report}")


    def finish_failed(self, message: str) -> None:
        """The run itself could not complete: said on stderr."""
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
        print(message, file=sys.stderr, flush=True)


def summary_table(run: RunResult) -> Table:
    """Variants x verdict counts: what ran where, at a glance."""
    shown = [v for v in VERDICTS if any(c.verdict == v for case in run.cases for c in case.variants.values())]
    table = Table(box=None, pad_edge=False, header_style="bold")
    table.add_column("variant")
    for verdict in shown:
        table.add_column(verdict, justify="right")
    for variant in run.variants:
        cells = [case.variants[variant["name"]].verdict for case in run.cases if variant["name"] in case.variants]
        table.add_row(variant["name"], *[str(cells.count(v)) if cells.count(v) else "·" for v in shown])
    return table


def _short(role: str, width: int = 48) -> str:
    return role if len(role) <= width else role[:width - 1] + "…"


class LineConsole(Console):
    """The console's events as plain text lines to a callable (the pytest plugin's terminal, tests); with
    `verbose` (the default for a bare callable) every case and request line too."""

    def __init__(self, lines: Lines, verbose: bool = True) -> None:
        self.lines = lines
        self.verbose, self.live, self.progress = verbose, False, None
        self.tasks, self.counts, self.roles = {}, {}, {}

    def __call__(self, line: str) -> None:
        self.lines(line)

    def print(self, line: str, style: str | None = None) -> None:
        self.lines(line)

    def finish(self, *args: Any) -> None:
        """The plugin and the tests read the results, not a printed summary."""


def as_console(progress: Console | Lines) -> Console:
    return progress if isinstance(progress, Console) else LineConsole(progress)


def quiet_third_parties() -> None:
    """Libraries' warnings the user cannot act on stay off the console (the engines' own go to OUT/logs)."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning)
