"""The decode-path effect table: parity with PIL pixels (the base variant) vs with
another decoder's pixels (a `decoder-<name>` variant), side by side, one row per
case. The table engine developers paste into bug reports."""
from __future__ import annotations

from typing import Any

from harness.core.format import fmt
from harness.core.schema import METRIC_INFO, RunResult, shown_in

PAIRS = shown_in("decode_effect")


def decoder_variants(run: RunResult) -> list[str]:
    """Names of the run's variants that feed the engine another decoder's pixels."""
    return [v["name"] for v in run.variants if v.get("request", {}).get("decoder", "pil") != "pil"]


def decode_effect_rows(run: RunResult, variant: str) -> list[dict[str, Any]]:
    rows = []
    for case in run.cases:
        effect = case.variants.get(variant)
        if effect is None or effect.verdict == "skipped":
            continue
        base = case.main if case.headline != variant else None
        deltas = effect.details.get("pixel_deltas", [])
        row: dict[str, Any] = {"case": case.case_id, "decoder": effect.details.get("decoder"),
                               "verdict_pil": base.verdict if base else None, "verdict_decoder": effect.verdict}
        # Worst image of the case; images with no statistics (decoder unavailable or
        # failed) do not count as zero.
        stats = [d["stats"] for d in deltas if d.get("stats")]
        for key in ("px_max", "px_mean", "px_frac_differ"):
            row[key] = max((s[key] for s in stats), default=None)
        row["findings"] = "; ".join(f["name"] for d in deltas for f in d.get("findings", []))
        for key in PAIRS:
            row[f"{key}_pil"] = getattr(base.comparison, key) if base and base.comparison else None
            row[f"{key}_decoder"] = getattr(effect.comparison, key) if effect.comparison else None
        rows.append(row)
    return rows


def decode_effect_markdown(run: RunResult, decoder: str) -> str:
    rows = decode_effect_rows(run, f"decoder-{decoder}")
    if not rows:
        return "(no case with images)"
    labels = [METRIC_INFO[k]["label"] for k in PAIRS]
    lines = [
        f"| case | px max | px mean | px differ | {labels[0]} pil → {decoder} | {' | '.join(labels[1:])} | verdict |",
        "|---" * (len(PAIRS) + 5) + "|",
    ]
    for r in rows:
        pairs = [f"{fmt(r[k + '_pil'])} → {fmt(r[k + '_decoder'])}" for k in PAIRS]
        frac = "–" if r["px_frac_differ"] is None else f"{r['px_frac_differ']:.1%}"
        lines.append(f"| {r['case']} | {fmt(r['px_max'])} | {fmt(r['px_mean'])} | {frac} | {' | '.join(pairs)} "
                     f"| {r['verdict_pil'] or '–'} → {r['verdict_decoder']} |")
    return "\n".join(lines)
