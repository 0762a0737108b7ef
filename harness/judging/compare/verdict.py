"""Turn a CaseComparison, the case's floor and the thresholds in force into findings.

A numeric metric passes when `error <= k * floor + atol` (FlashAttention's rule; `k` the metric's own where
calibrated, else the dtype's): the engine may be
k times as far from the reference as the reference is from itself recomputed another legitimate way
(the floor, `harness.judging.compare.floor`), plus the dtype's rounding floor `atol`. The absolute bound of
the metric stays as an outer ceiling, and decides alone where the case has no floor. Between
`k_warn * floor + atol` and the failure bound the metric drifts: a warning, tracked nightly. For a
higher-is-better metric (an overlap, an agreement share) the error is its shortfall from 1; for a
second-order metric (KL divergence) the multiples are k^2 and k_warn^2.
"""
from __future__ import annotations

from harness.config import Thresholds, ceiling_key, multiple
from harness.core.schema import METRIC_INFO, METRICS, CaseComparison, Finding, Floor, judged_by


def floor_of(floor: Floor | None, metric: str) -> float | None:
    """The case's floor for a metric; a metric declared `pooled` with another takes the larger of the two
    (16 greedy steps give a noisier floor than the prompt's positions, computed by the same arithmetic)."""
    if floor is None or floor.unavailable:
        return None
    own = floor.metrics.get(metric)
    pooled = METRIC_INFO[metric]["pooled"]
    other = floor.metrics.get(pooled) if pooled else None
    values = [v for v in (own, other) if v is not None]
    if not values:
        return None
    return min(values) if METRIC_INFO[metric]["better"] == "higher" else max(values)


def check_metric(metric: str, value: float, th: Thresholds, floor: float | None, against: str = "reference",
                 attempt: int = 0) -> Finding:
    """One metric of the floor rule (or an informative one) against its floor and ceiling: a Finding with
    level pass, drift or fail. An informative metric shows its floor and ratio, it never fails."""
    info = METRIC_INFO[metric]
    higher = info["better"] == "higher"
    err = 1.0 - value if higher else value
    floor_err = None if floor is None else (1.0 - floor if higher else floor)
    ratio = None if floor_err is None or floor_err <= 0 else err / floor_err
    if info["rule"] == "info":
        return Finding(metric, "pass", value, floor=floor, ratio=ratio, rule="info", against=against, attempt=attempt)
    ceiling_err = 1.0 - th[ceiling_key(metric)] if higher else th[ceiling_key(metric)]
    order = info["order"]
    k, k_warn = multiple(th, metric, "k") ** order, multiple(th, metric, "k_warn") ** order
    atol = th[f"{metric}_atol"]
    bound_err, rule = ceiling_err, "ceiling"
    if floor_err is not None and k * floor_err + atol <= ceiling_err:
        bound_err, rule = k * floor_err + atol, "floor"
    level = "pass"
    if not err <= bound_err:  # `not <=` so that NaN fails
        level = "fail"
    elif floor_err is not None and err > k_warn * floor_err + atol:
        level = "drift"
    bound = 1.0 - bound_err if higher else bound_err
    return Finding(metric, level, value, bound, floor, ratio, rule, against, attempt, k=k if rule == "floor" else None)


def check_greedy(metric: str, cmp: CaseComparison, th: Thresholds, where: dict[str, object]) -> Finding | None:
    """The greedy rule on the first diverging output token (`metric`'s value): with `greedy: exact` any
    divergence fails; with `topk` one passes where each side's token is in the other's top-k (a near-tie)."""
    at = getattr(cmp, metric)
    detail = f"at output token {at} of {cmp.decode_len}"
    if th["greedy"] == "exact":
        return Finding(metric, "fail", at, rule="exact", detail=f"{detail}; greedy outputs must be identical at "
                                                                 "this dtype", **where)
    if not cmp.divergence_in_topk:
        return Finding(metric, "fail", at, rule="topk",
                       detail=f"{detail}, and divergence_in_topk = false (not a near-tie)", **where)
    return None


def check_bound(metric: str, value: float, th: Thresholds, where: dict[str, object]) -> Finding:
    """The bound rule: the absolute bound alone (`name_min` from below, `name` from above), no floor."""
    bound = th[ceiling_key(metric)]
    higher = METRIC_INFO[metric]["better"] == "higher"
    ok = value >= bound if higher else value <= bound
    return Finding(metric, "pass" if ok else "fail", value, bound, rule="min" if higher else "max", **where)


def check_aligned(metric: str, cmp: CaseComparison, where: dict[str, object]) -> Finding:
    """The aligned rule: prompts tokenized differently leave no position to compare."""
    return Finding(metric, "fail", rule="structural", detail=(
        f"engine tokenized the prompt to {cmp.prompt_len_engine} ids, reference to {cmp.prompt_len_reference}; "
        "logprob diffs not computed on misaligned positions"), **where)


# The judged metrics in the order a comparison's checks are listed: the numbers (floor rule and informative)
# first, then the greedy outputs, then the text bound. The aligned rule is checked before them all, and a
# "shown" metric is not judged on its own.
JUDGED = (*(m for m in METRICS if METRIC_INFO[m]["rule"] in ("floor", "info")), *judged_by("greedy"),
          *judged_by("bound"))
ALIGNED = judged_by("aligned")


def judge(cmp: CaseComparison, th: Thresholds, floor: Floor | None = None, against: str = "reference",
          attempt: int = 0) -> list[Finding]:
    """Every judged metric of `cmp` into `cmp.checks` (pass, drift or fail), by its declared rule; returns
    those that fail or drift.

    Misaligned or missing token ids and logprobs are structural failures: no number is compared on them."""
    where: dict[str, object] = {"against": against, "attempt": attempt}
    misaligned = {m: check_aligned(m, cmp, where) for m in ALIGNED if getattr(cmp, m) is False}
    if misaligned:
        cmp.checks = misaligned
        return list(misaligned.values())
    checks = {f"incomplete:{i}": Finding("incomplete", "fail", rule="structural", detail=gap, **where)
              for i, gap in enumerate(cmp.missing)}
    for metric in JUDGED:
        rule, value = METRIC_INFO[metric]["rule"], getattr(cmp, metric)
        if value is None:
            continue
        if rule == "greedy":
            found = check_greedy(metric, cmp, th, where)
        elif rule == "bound":
            found = check_bound(metric, value, th, where)
        else:
            found = check_metric(metric, float(value), th, floor_of(floor, metric), against, attempt)
        if found is not None:
            checks[metric] = found
    cmp.checks = checks
    return [f for f in checks.values() if f.level != "pass"]
