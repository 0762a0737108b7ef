"""The decode-path effect table: parity with PIL pixels vs with another decoder's
pixels, side by side, one row per case image. The table engine developers paste
into bug reports."""
from __future__ import annotations

from typing import Any

from harness.report.format import fmt
from harness.schema import RunResult

PAIRS = ("prefill_max", "prefill_mean", "decode_max", "decode_mean", "rouge_l")


def decode_effect_rows(run: RunResult) -> list[dict[str, Any]]:
    rows = []
    for case in run.cases:
        effect = case.decode_effect
        if effect is None:
            continue
        row: dict[str, Any] = {"case": case.case_id, "decoder": effect.decoder, "verdict_pil": case.verdict,
                               "verdict_decoder": effect.verdict}
        # Worst image of the case; images with no statistics (decoder unavailable or
        # failed) do not count as zero.
        stats = [d["stats"] for d in effect.pixel_deltas if d.get("stats")]
        for key in ("px_max", "px_mean", "px_frac_differ"):
            row[key] = max((s[key] for s in stats), default=None)
        row["findings"] = "; ".join(f["name"] for d in effect.pixel_deltas for f in d.get("findings", []))
        for key in PAIRS:
            row[f"{key}_pil"] = getattr(case.comparison, key) if case.comparison else None
            row[f"{key}_decoder"] = getattr(effect.comparison, key) if effect.comparison else None
        rows.append(row)
    return rows


def decode_effect_markdown(run: RunResult) -> str:
    rows = decode_effect_rows(run)
    if not rows:
        return "(no case with images)"
    decoder = rows[0]["decoder"]
    lines = [
        f"| case | px max | px mean | px differ | prefill max pil → {decoder} | prefill mean | decode max "
        f"| decode mean | ROUGE-L | verdict |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        pairs = [f"{fmt(r[k + '_pil'])} → {fmt(r[k + '_decoder'])}" for k in PAIRS]
        frac = "–" if r["px_frac_differ"] is None else f"{r['px_frac_differ']:.1%}"
        lines.append(f"| {r['case']} | {fmt(r['px_max'])} | {fmt(r['px_mean'])} | {frac} | {' | '.join(pairs)} "
                     f"| {r['verdict_pil']} → {r['verdict_decoder']} |")
    return "\n".join(lines)
