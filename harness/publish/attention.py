"""What a run asks of a person, grouped so one bug reads as one row: the report, the step summary and the
console's closing lines all render these.

Cells that fail, error or drift are grouped by signature (their level, the first stage the ladder found
different, the failing metrics or error types, and the set of variants it happens on within a case), so a
bug that fails every case is one group with its count; so are the known failures a person should look at:
a record that applies to a cell which passed (`xpass`: the engine may be fixed) and a known cell that
passed in the last run of the history (`new-known`), grouped by record. Other known failures are grouped by
their record (one row per entry of known_failures.yaml): they need no one, and are shown folded.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from harness.core.format import ratio as ratio_text
from harness.core.notes import error_notes, note_text
from harness.core.schema import CaseResult, Note, RunResult, VariantResult
from harness.judging.compare.returned import after_logits
from harness.judging.explain import case_lines, finding_text, ladder_text, variant_lines
from harness.judging.ladder import LABELS

LEVELS = ("error", "fail", "drift", "new-known", "xpass")  # in the order a person should look at them
# The note that puts a known or passing cell under attention, by level (`harness.core.notes`).
RECORD_NOTES = {"new-known": "known_new", "xpass": "known_unmatched"}
SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")


@dataclass(frozen=True)
class Cell:
    """One cell that needs a look: its case, variant ("" for a case that never reached a variant), level and
    first line (its first finding, and where inside the model it first differs when probed)."""

    case: str
    variant: str
    level: str
    line: str


@dataclass
class Group:
    """Cells with one signature: `stage` is the ladder's first differing stage (None where not probed or
    none found), `metrics` the failing metrics, drifting metrics or error types."""

    level: str
    stage: str | None
    metrics: tuple[str, ...]
    variants: tuple[str, ...]
    cells: list[Cell] = field(default_factory=list)

    @property
    def cases(self) -> list[str]:
        return list(dict.fromkeys(c.case for c in self.cells))

    @property
    def line(self) -> str:
        """The group's first finding (its first cell's)."""
        return self.cells[0].line


@dataclass
class KnownRecord:
    """One known-failure record and the cells it covers: case -> the variants it covers there."""

    reason: str
    reproduction: str
    cases: dict[str, list[str]] = field(default_factory=dict)

    @property
    def variants(self) -> list[str]:
        return sorted({v for names in self.cases.values() for v in names})

    @property
    def cells(self) -> int:
        return sum(len(names) for names in self.cases.values())

    @property
    def title(self) -> str:
        """The record's reason, its first sentence."""
        return SENTENCE_END.split(self.reason, maxsplit=1)[0]


def _level(cell: VariantResult) -> str | None:
    if cell.verdict in ("fail", "error"):
        return cell.verdict
    if cell.drifting:
        return "drift"
    return next((level for level, kind in RECORD_NOTES.items() if any(n.kind == kind for n in cell.notes)), None)


def _record(cell: VariantResult) -> Note | None:
    """The known-failure record a cell's attention is about (its own, or the one it no longer matches)."""
    return next((n for n in cell.notes if n.kind in ("known_failure", "known_unmatched")), None)


def _signature_key(case: CaseResult, cell: VariantResult, level: str) -> tuple[str | None, tuple[str, ...]]:
    if level in RECORD_NOTES:
        record = _record(cell)
        return None, (record.data.get("reproduction") or "no reproduction",) if record else ()
    if level == "error":
        return None, tuple(sorted({str(n.data.get("type") or n.kind) for n in error_notes(cell.notes)}))
    if level == "drift":
        return None, tuple(sorted({f.metric for f in cell.drifting}))
    stage = case.ladder.first if case.ladder is not None else "returned" if after_logits(cell.failing) else None
    return stage, tuple(sorted({f.metric for f in cell.failing}))


def _cell_line(case: CaseResult, name: str, cell: VariantResult, level: str) -> str:
    if level in RECORD_NOTES:
        shown = [n for n in cell.notes if n.kind == RECORD_NOTES[level]]
        shown += [r for r in [_record(cell)] if r is not None and level == "new-known"]
        return " ".join(note_text(n) for n in shown)
    if level == "drift":
        return finding_text(cell.drifting[0])
    lines = variant_lines(cell)
    line = lines[0] if lines else ""
    if case.ladder is not None and case.ladder.variant == name:
        line = f"{line} · {ladder_text(case.ladder, cell.verdict == 'fail')}"
    return line


def attention(run: RunResult) -> list[Group]:
    """Failing, erroring and drifting cells, and known failures a person should look at, grouped by signature:
    errors first, then the largest groups."""
    groups: dict[tuple, Group] = {}
    for case in run.cases:
        if not case.variants and case.verdict in ("fail", "error"):
            key = (case.verdict, None, (), ())
            groups.setdefault(key, Group(case.verdict, None, (), ())).cells.append(
                Cell(case.case_id, "", case.verdict, "; ".join(case_lines(case))))
            continue
        by_key: dict[tuple, list[Cell]] = {}
        for name, cell in case.variants.items():
            level = _level(cell)
            if level is None:
                continue
            stage, metrics = _signature_key(case, cell, level)
            by_key.setdefault((level, stage, metrics), []).append(
                Cell(case.case_id, name, level, _cell_line(case, name, cell, level)))
        for (level, stage, metrics), cells in by_key.items():
            variants = tuple(c.variant for c in cells)
            groups.setdefault((level, stage, metrics, variants),
                              Group(level, stage, metrics, variants)).cells.extend(cells)
    return sorted(groups.values(), key=lambda g: (LEVELS.index(g.level), -len(g.cells)))


def known_records(run: RunResult) -> list[KnownRecord]:
    """Known-failure cells grouped by their record, the largest first."""
    records: dict[tuple[str, str], KnownRecord] = {}
    for case in run.cases:
        # A case the reference could not run, for a reference bug on record, is one known cell of its own.
        cells = case.variants.items() if case.variants else [("reference", case)]
        for name, cell in cells:
            if cell.verdict != "known":
                continue
            data = next((n.data for n in cell.notes if n.kind == "known_failure"), {})
            reason, repro = data.get("reason", "known failure"), data.get("reproduction", "")
            record = records.setdefault((reason, repro), KnownRecord(reason, repro))
            record.cases.setdefault(case.case_id, []).append(name)
    return sorted(records.values(), key=lambda r: -r.cells)


def cell_counts(run: RunResult) -> dict[str, int]:
    """Cells by verdict (every case's variants; a case that reached none counts as one cell)."""
    counts: dict[str, int] = {}
    for case in run.cases:
        for verdict in [c.verdict for c in case.variants.values()] or [case.verdict]:
            counts[verdict] = counts.get(verdict, 0) + 1
    return counts


def headline(run: RunResult) -> str:
    """'385 of 423 cells pass; 38 known in 3 records; 0 fail' (with errors, drift and skipped where any)."""
    cells = cell_counts(run)
    ran = sum(n for v, n in cells.items() if v != "skipped")
    records = len(known_records(run))
    drifting = sum(bool(c.drifting) for case in run.cases for c in case.variants.values())
    parts = [f"{cells.get('pass', 0)} of {ran} cells pass"]
    if cells.get("known"):
        parts.append(f"{cells['known']} known in {records} record{'s' * (records != 1)}")
    parts.append(f"{cells.get('fail', 0)} fail")
    parts += [f"{cells['error']} error"] if cells.get("error") else []
    parts += [f"{drifting} drifting"] if drifting else []
    parts += [f"{cells['skipped']} skipped"] if cells.get("skipped") else []
    return "; ".join(parts)


def case_headline(run: RunResult) -> str:
    """'36 cases by their worst cell: 4 pass, 32 known, 0 fail'."""
    counts = run.counts()
    shown = [f"{counts[v]} {v}" for v in ("pass", "known", "fail", "error", "skipped") if counts[v]
             or v in ("pass", "fail")]
    return f"{len(run.cases)} cases by their worst cell: {', '.join(shown)}"


def group_title(group: Group) -> str:
    """'fail on batched, alone: prefill_max, same_top1 · first differs at the vision encoder output'."""
    on = f" on {', '.join(group.variants)}" if group.variants else ""
    what = f": {', '.join(group.metrics)}" if group.metrics else ""
    where = f" · first differs at {LABELS.get(group.stage, group.stage)}" if group.stage else ""
    return f"{group.level}{on}{what}{where}"


def cell_ratio(cell: VariantResult) -> str:
    """The cell's largest ratio to the floor, '7.1e5x' (its failing findings first, then its drifting ones,
    then every check of its comparison); '' where none has a floor."""
    for found in (cell.failing, cell.drifting):
        ratios = [f.ratio for f in found if f.ratio is not None and f.ratio == f.ratio]
        if ratios:
            return ratio_text(max(ratios))
    checks = cell.comparison.checks.values() if cell.comparison else []
    ratios = [c.ratio for c in checks if c.ratio is not None and c.ratio == c.ratio]
    return ratio_text(max(ratios)) if ratios else ""
