"""The flat table, one row per case and variant with every scalar metric: parquet and CSV.

For dashboards and notebooks: everything numeric in results.json that is one
value per cell, without the per-position arrays. Columns come from the schema.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from harness.core.files import write_atomic
from harness.core.schema import METRIC_INFO, METRICS, SCALAR_FIELDS, CaseComparison, RunResult
from harness.judging.explain import case_lines, finding_text, variant_lines

if TYPE_CHECKING:
    import pandas as pd

# Every metric with its floor, ratio to the floor, bound in force and check level beside it.
CHECK_COLUMNS = tuple(f"{m}_{part}" for m in METRICS for part in ("floor", "ratio", "bound", "level"))
COLUMNS = ("case_id", "variant", "verdict", "case_verdict", "reasons", "drift", "tags", "images", "source",
           *SCALAR_FIELDS, *CHECK_COLUMNS, "unavailable")


def case_table(run: RunResult) -> pd.DataFrame:
    import pandas as pd  # a third of a second of start-up: paid when the tables are written, not at import

    rows = []
    for case in run.cases:
        base = {"case_id": case.case_id, "case_verdict": case.verdict, "tags": ",".join(case.tags),
                "images": len(case.images), "source": case.source}
        cells = case.variants.values() or [None]
        for cell in cells:
            cmp = cell.comparison if cell else None
            rows.append({**base, "variant": cell.variant if cell else None,
                         "verdict": cell.verdict if cell else case.verdict,
                         "reasons": "; ".join(variant_lines(cell) if cell else case_lines(case)),
                         "drift": "; ".join(finding_text(f) for f in cell.drifting) if cell else "",
                         **{m: getattr(cmp, m) if cmp else None for m in SCALAR_FIELDS},
                         **_checks(cmp),
                         "unavailable": ",".join(sorted(cmp.unavailable)) if cmp else ""})
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    for key in ("engine", "model", "dtype", "git_commit", "date"):
        frame[key] = getattr(run.provenance, key)
    return frame


def _checks(cmp: CaseComparison | None) -> dict[str, object]:
    out: dict[str, object] = {}
    for name, check in (cmp.checks if cmp else {}).items():
        if name in METRIC_INFO:
            out.update({f"{name}_floor": check.floor, f"{name}_ratio": check.ratio, f"{name}_bound": check.bound,
                        f"{name}_level": check.level})
    return out


def write_tables(run: RunResult, out_dir: Path) -> list[Path]:
    frame = case_table(run)
    return [write_atomic(out_dir / "cases.parquet", frame.to_parquet(index=False)),
            write_atomic(out_dir / "cases.csv", frame.to_csv(index=False))]
