"""The floor of a case: the reference's own error, measured exactly like the engine's.

The reference is recomputed in legitimate other ways (in the engine's dtype, with another attention
kernel, or in float64: `harness.plan.floor_runs`) and each recomputation is compared with the
reference by the same comparator as the engine. A healthy engine differs from the reference by about
as much as the reference differs from itself done another correct way; a bug differs by more.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from harness.compare import compare_outputs
from harness.schema import METRIC_INFO, EngineOutput, Floor

# The metrics a floor is kept for: every number a comparison computes (booleans are not errors).
FLOOR_METRICS = tuple(m for m, info in METRIC_INFO.items() if info["section"] in ("prefill", "distribution", "decode")
                      and m not in ("divergence_in_topk",))


def measure_floor(reference: EngineOutput, outputs: Mapping[str, EngineOutput], runs: Mapping[str, dict[str, Any]],
                  image_token: int | None, source: str = "live") -> Floor:
    """The worst, per metric and per prompt position, over the floor runs that returned a usable output."""
    usable, problems = [], []
    for name in runs:
        out = outputs.get(name)
        if out is None or out.error:
            problems.append(f"{name}: {out.error if out else 'no output'}")
            continue
        cmp = compare_outputs(reference, out, image_token)
        if cmp.prompt_ids_match is False or cmp.missing:
            problems.append(f"{name}: its prompt ids or logprobs do not align with the reference's")
            continue
        usable.append(cmp)
    if not usable:
        return Floor(dict(runs), source=source,
                     unavailable="no floor run returned a usable output" + (f" ({'; '.join(problems)})"
                                                                           if problems else ""))
    metrics: dict[str, float | None] = {}
    for metric in FLOOR_METRICS:
        values = [float(v) for c in usable if (v := getattr(c, metric)) is not None]
        pick = min if METRIC_INFO[metric]["better"] == "higher" else max
        metrics[metric] = pick(values) if values else None
    width = max(len(c.prefill_diffs) for c in usable)
    diffs: list[float | None] = []
    for i in range(width):
        at = [c.prefill_diffs[i] for c in usable if i < len(c.prefill_diffs) and c.prefill_diffs[i] is not None]
        diffs.append(max(at) if at else None)
    return Floor(dict(runs), metrics, diffs, source)
