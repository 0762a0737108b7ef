"""The whole suite's drift: per metric, the distribution of every cell's ratio to its case's floor, against a
clean run's distribution.

A per-cell rule cannot separate a case at 2.8x its floor from the clean tail at 2.9x; an engine-wide numerical
change (a kernel, a weight-loading step) moves the whole distribution, which a rank test sees while no cell
fails. Each floor-judged metric's sample (the cells compared with the reference, known failures and errors
left out) is tested against the clean sample recorded by `vlm-parity calibrate --record` (beside the stored
references) with a one-sided Mann-Whitney U test, and the shift of the median is the effect size: the suite
drifts on a metric when the p-value is below `alpha`, the median moved by at least `min_shift` and the median
cell is at least `min_median` times its floor (thresholds.yaml `suite:`). A drift is a finding of
the run, never of a case: the default and release gates refuse it. A run of part of the suite (`--case`, a
shard, a `-k` selection) is not tested: its cells are not the sample's.
"""
from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from harness.config import Thresholds
from harness.core.schema import METRIC_INFO, RunResult, SuiteShift, judged_by

FLOOR_METRICS = judged_by("floor")  # the metrics a cell judges by its ratio to the floor
# The suite is tested on the continuous ones (lower is better); an agreement share moves in steps of a token
# (its ratios take a few values, half of them 0), so its median is no measure of a drift.
SUITE_METRICS = tuple(m for m in FLOOR_METRICS if METRIC_INFO[m]["better"] == "lower")
QUANTILES = (0.5, 0.9, 0.99, 1.0)  # what the history and the console show of a distribution
SIGNIFICANT = 4  # digits a stored ratio keeps


def cell_ratios(run: RunResult) -> dict[str, list[float]]:
    """Each floor-judged metric's ratio to the floor in every cell compared with the reference (a known failure
    or an error is a bug or no comparison, not the engine's numerical spread)."""
    ratios: dict[str, list[float]] = {m: [] for m in FLOOR_METRICS}
    for case in run.cases:
        for cell in case.variants.values():
            if cell.verdict not in ("pass", "fail") or cell.comparison is None:
                continue
            for name, check in cell.comparison.checks.items():
                if name in ratios and check.ratio is not None and math.isfinite(check.ratio):
                    ratios[name].append(check.ratio)
    return {m: values for m, values in ratios.items() if values}


def summary(values: Sequence[float]) -> dict[str, float]:
    """n, and the QUANTILES of a ratio sample ('p50', 'p90', 'p99', 'max')."""
    import numpy as np

    names = {0.5: "p50", 0.9: "p90", 0.99: "p99", 1.0: "max"}
    return {"n": len(values), **{names[q]: round_sig(float(np.quantile(values, q))) for q in QUANTILES}}


def round_sig(value: float, digits: int = SIGNIFICANT) -> float:
    return float(f"{value:.{digits}g}")


@dataclass(frozen=True)
class SuiteRule:
    """When the suite drifts on a metric (thresholds.yaml `suite:`)."""

    alpha: float
    min_shift: float
    min_cells: int
    min_median: float  # a suite whose median cell is within its floor has not drifted, whatever the shift

    @classmethod
    def of(cls, section: Thresholds) -> SuiteRule:
        return cls(float(section["alpha"]), float(section["min_shift"]), int(section["min_cells"]),
                   float(section["min_median"]))


def sample_dtype(engine: str, reference: str | None) -> str:
    """The dtypes a clean sample is of: the engine's, and the reference's where it differs."""
    return engine if reference in (None, "", engine) else f"{engine}-vs-{reference}"


def mann_whitney_greater(sample: Sequence[float], clean: Sequence[float]) -> float:
    """The one-sided p-value that `sample` is stochastically greater than `clean` (Mann-Whitney U)."""
    from scipy.stats import mannwhitneyu

    return float(mannwhitneyu(sample, clean, alternative="greater").pvalue)


def shift_test(ratios: Mapping[str, Sequence[float]], clean: Mapping[str, Sequence[float]], source: str,
               rule: SuiteRule) -> list[SuiteShift]:
    """Per metric with enough cells on both sides: the median shift and the rank test's p-value against the
    clean sample (`source` names it); `drifts` when the p-value is below alpha, the median moved by at least
    min_shift and is at least min_median."""
    shifts = []
    for metric in SUITE_METRICS:
        sample, reference = ratios.get(metric, []), clean.get(metric, [])
        if len(sample) < rule.min_cells or len(reference) < rule.min_cells:
            continue
        median, clean_median = statistics.median(sample), statistics.median(reference)
        shift = median / clean_median if clean_median > 0 else None  # None: a clean median of 0 has no multiple
        p_value = mann_whitney_greater(sample, reference)
        drifts = (p_value < rule.alpha and median >= rule.min_median
                  and (shift is None or shift >= rule.min_shift))
        shifts.append(SuiteShift(metric, len(sample), round_sig(median), round_sig(clean_median),
                                 None if shift is None else round_sig(shift), float(f"{p_value:.3g}"), drifts, source))
    return shifts


def drifting(shifts: Iterable[SuiteShift]) -> list[SuiteShift]:
    return [s for s in shifts if s.drifts]


def shift_text(s: SuiteShift) -> str:
    """'suite drifted on prefill_mean: median 2.71x its floor over 266 cells, clean 0.78x (shift 3.47x, p 3.4e-22)'."""
    verb = "drifted" if s.drifts else "holds"
    shift = "no multiple of 0" if s.shift is None else f"{s.shift:.3g}x"
    return (f"suite {verb} on {s.metric}: median {s.median:.3g}x its floor over {s.cells} cells, clean "
            f"{s.clean_median:.3g}x (shift {shift}, p {s.p_value:.2g})")
