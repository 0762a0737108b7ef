"""The zoo: every built-in architecture's run under one folder, as one table and one release decision.

`vlm-parity run --model all` writes each model's results and report to `<out>/<model>/` and this module's
`zoo.json` (one row per model) and `index.html` (the table, linking each model's report) beside them; the
gate and the history read the folder as one release over every model.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from html import escape
from pathlib import Path

from harness.core.files import write_atomic
from harness.core.schema import RunResult
from harness.publish.attention import cell_counts, known_records

ZOO_FILE = "zoo.json"
ALL_MODELS = "all"  # the `--model` value that runs the zoo


@dataclass
class ZooRow:
    """One model's run, as the zoo table shows it."""

    model: str
    architecture: str
    verdict: str  # the run's verdict, or "error" where it could not complete
    cases: dict[str, int] = field(default_factory=dict)  # by their worst cell
    cells: dict[str, int] = field(default_factory=dict)
    worst_ratio: float | None = None  # the largest ratio to its floor of any judged check of a passing or failing cell
    known: list[str] = field(default_factory=list)  # each record's reproduction (its title where it has none)
    seconds: float = 0.0
    error: str | None = None

    @property
    def folder(self) -> str:
        return self.model


def zoo_row(model: str, architecture: str, run: RunResult, seconds: float) -> ZooRow:
    # Known cells are left out: a bug on record is far beyond its floor by definition and would hide the rest.
    ratios = [check.ratio for case in run.cases for cell in case.variants.values()
              if cell.comparison and cell.verdict in ("pass", "fail")
              for check in cell.comparison.checks.values() if check.ratio is not None and check.rule != "info"]
    return ZooRow(model, architecture, run.verdict if run.status == "complete" else "error", run.counts(),
                  cell_counts(run), max(ratios) if ratios else None,
                  [r.reproduction.split()[-1] if r.reproduction else _short(r.title) for r in known_records(run)],
                  round(seconds, 1), run.error)


def _short(text: str, width: int = 48) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def failed_row(model: str, architecture: str, error: str, seconds: float) -> ZooRow:
    return ZooRow(model, architecture, "error", seconds=round(seconds, 1), error=error)


def write_zoo(out: Path, rows: list[ZooRow], planned: list[str]) -> Path:
    """`zoo.json` (the models planned, and a row per model run so far) and the table page `index.html` in
    `out`; the page's path."""
    data = {"planned": planned, "rows": [asdict(r) for r in rows]}
    write_atomic(out / ZOO_FILE, json.dumps(data, indent=1) + "\n")
    page = out / "index.html"
    write_atomic(page, zoo_html(rows))
    return page


def read_zoo(out: Path) -> tuple[list[ZooRow], list[str]] | None:
    """The zoo's rows and the models it planned if `out` is a zoo folder, else None."""
    path = Path(out) / ZOO_FILE
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    return [ZooRow(**row) for row in data["rows"]], list(data["planned"])


def _counts(row: ZooRow) -> str:
    failed = row.cases.get("fail", 0) + row.cases.get("error", 0)
    return f"{row.cases.get('pass', 0)}/{row.cases.get('known', 0)}/{failed}"


def _ratio(row: ZooRow) -> str:
    return "-" if row.worst_ratio is None else f"{row.worst_ratio:.2g}x"


HEADER = ("model", "architecture", "verdict", "pass/known/fail", "worst ratio", "time", "known records")


def table_rows(rows: list[ZooRow]) -> list[tuple[str, ...]]:
    """The zoo table's cells, as text (the console and the page render the same)."""
    return [(r.model, r.architecture.removesuffix("ForConditionalGeneration"), r.verdict, _counts(r), _ratio(r),
             f"{r.seconds:.0f} s", "; ".join(r.known) or (r.error or "-")) for r in rows]


def verdict(rows: list[ZooRow]) -> str:
    """pass when every model's run passed (known failures included), else the worst."""
    order = ("pass", "fail", "error")
    return max((r.verdict for r in rows), key=lambda v: order.index(v) if v in order else len(order), default="error")


def zoo_html(rows: list[ZooRow]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in HEADER)
    body = "".join(
        "<tr>" + "".join(f"<td>{cell}</td>" for cell in (
            f'<a href="{escape(r.folder)}/index.html">{escape(r.model)}</a>', *map(escape, cells[1:]))) + "</tr>"
        for r, cells in zip(rows, table_rows(rows)))
    return (f"<!doctype html><meta charset=utf-8><title>vlm-parity zoo: {verdict(rows)}</title>"
            "<style>body{font:14px system-ui;margin:2em}table{border-collapse:collapse}"
            "td,th{padding:4px 10px;border-bottom:1px solid #ddd;text-align:left;vertical-align:top}</style>"
            f"<h1>Every built-in architecture: {verdict(rows).upper()}</h1>"
            f"<p>{len(rows)} models; cases by their worst cell: pass / known / fail; worst ratio: the largest ratio "
            "of a judged check of a passing or failing cell to its floor (known cells left out).</p>"
            f"<table><tr>{head}</tr>{body}</table>")
