"""The floor of a case: the reference's own error, measured exactly like the engine's.

The reference is recomputed in legitimate other ways (in the engine's dtype, with another attention
kernel, or in float64: `harness.run.plan.floor_runs`) and each recomputation is compared with the
reference by the same comparator as the engine. A healthy engine differs from the reference by about
as much as the reference differs from itself done another correct way; a bug differs by more.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from harness.core.schema import METRIC_INFO, EngineOutput, Floor
from harness.judging.compare import compare_outputs
from harness.run.variants import RERUN_PREFIX, rerun_floor_name


def floor_key(dtype: str, rerun: str | None = None) -> str:
    """Where a case's floors are kept: by engine dtype, and for a re-run by dtype and re-run."""
    return f"{dtype}|{rerun}" if rerun else dtype


def case_floors(reference: EngineOutput, outputs: Mapping[str, EngineOutput],
                runs_by_dtype: Mapping[str, Mapping[str, dict[str, Any]]], image_token: int | None,
                source: str = "live") -> dict[str, Floor]:
    """The case's floors per engine dtype: of the reference, and of each re-run in `outputs` (a re-run with
    a smaller max_pixels is another prompt, whose noise the reference's own floor does not measure)."""
    floors: dict[str, Floor] = {}
    reruns = [name for name in outputs if name.startswith(RERUN_PREFIX)]
    for dtype, runs in runs_by_dtype.items():
        floors[floor_key(dtype)] = measure_floor(reference, outputs, runs, image_token, source)
        for rerun in reruns:
            mine = {name: out for name in runs if (out := outputs.get(rerun_floor_name(name, rerun)))}
            floors[floor_key(dtype, rerun)] = measure_floor(outputs[rerun], mine, runs, image_token, source)
    return floors


# The metrics a floor is kept for: those declared with one (`harness.core.schema.metric`'s `floor`).
FLOOR_METRICS = tuple(m for m, info in METRIC_INFO.items() if info["floor"])


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
    return Floor(dict(runs), metrics, _worst_per_position([c.prefill_diffs for c in usable]), source)


def _worst_per_position(series: list[list[float | None]]) -> list[float | None]:
    """The largest of the series' values at each position (None where none has one), over the longest series."""
    width = max(map(len, series), default=0)
    values = np.full((len(series), width), np.nan)
    given = np.zeros((len(series), width), dtype=bool)
    for row, diffs in enumerate(series):
        values[row, :len(diffs)] = np.array(diffs, dtype=np.float64)  # None is nan here, and not given
        given[row, :len(diffs)] = np.fromiter((d is not None for d in diffs), dtype=bool, count=len(diffs))
    with np.errstate(invalid="ignore"):
        worst = np.where(given, values, -np.inf).max(axis=0, initial=-np.inf)
    return [w if g else None for w, g in zip(worst.tolist(), given.any(axis=0).tolist())]
