"""The flat per-case table (one row per case, metrics as columns): parquet and CSV.

For dashboards and notebooks: everything numeric in results.json that is one
value per case, without the per-position arrays.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from harness.schema import RunResult

METRICS = (
    "prompt_ids_match", "prompt_len_reference", "prompt_len_engine", "image_positions",
    "prefill_max", "prefill_mean", "prefill_p99", "prefill_max_image", "prefill_max_text", "prefill_topk_overlap",
    "decode_len", "decode_common_prefix", "first_divergence", "decode_max", "decode_mean", "divergence_in_topk",
    "rouge_l",
)


def case_table(run: RunResult) -> pd.DataFrame:
    rows = []
    for case in run.cases:
        row = {"case_id": case.case_id, "verdict": case.verdict, "reasons": "; ".join(case.reasons),
               "tags": ",".join(case.tags), "images": len(case.images), "source": case.source}
        cmp = case.comparison
        row.update({m: getattr(cmp, m) if cmp else None for m in METRICS})
        rows.append(row)
    frame = pd.DataFrame(rows, columns=["case_id", "verdict", "reasons", "tags", "images", "source", *METRICS])
    for key in ("engine", "model", "dtype", "git_commit", "date"):
        frame[key] = run.provenance.get(key)
    return frame


def write_tables(run: RunResult, out_dir: Path) -> list[Path]:
    frame = case_table(run)
    parquet, csv = out_dir / "cases.parquet", out_dir / "cases.csv"
    frame.to_parquet(parquet, index=False)
    frame.to_csv(csv, index=False)
    return [parquet, csv]
