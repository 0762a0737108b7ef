"""The flat table, one row per case and variant with every scalar metric: parquet and CSV.

For dashboards and notebooks: everything numeric in results.json that is one
value per cell, without the per-position arrays. Columns come from the schema.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from harness.results import write_atomic
from harness.schema import SCALAR_FIELDS, RunResult

COLUMNS = ("case_id", "variant", "verdict", "case_verdict", "reasons", "tags", "images", "source", *SCALAR_FIELDS,
           "unavailable")


def case_table(run: RunResult) -> pd.DataFrame:
    rows = []
    for case in run.cases:
        base = {"case_id": case.case_id, "case_verdict": case.verdict, "tags": ",".join(case.tags),
                "images": len(case.images), "source": case.source}
        cells = case.variants.values() or [None]
        for cell in cells:
            cmp = cell.comparison if cell else None
            rows.append({**base, "variant": cell.variant if cell else None,
                         "verdict": cell.verdict if cell else case.verdict,
                         "reasons": "; ".join(cell.reasons if cell else case.reasons),
                         **{m: getattr(cmp, m) if cmp else None for m in SCALAR_FIELDS},
                         "unavailable": ",".join(sorted(cmp.unavailable)) if cmp else ""})
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    for key in ("engine", "model", "dtype", "git_commit", "date"):
        frame[key] = run.provenance.get(key)
    return frame


def write_tables(run: RunResult, out_dir: Path) -> list[Path]:
    frame = case_table(run)
    return [write_atomic(out_dir / "cases.parquet", frame.to_parquet(index=False)),
            write_atomic(out_dir / "cases.csv", frame.to_csv(index=False))]
