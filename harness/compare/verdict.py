"""Turn a CaseComparison, the case's floor and the thresholds in force into findings.

A numeric metric passes when `error <= k * floor + atol` (FlashAttention's rule): the engine may be
k times as far from the reference as the reference is from itself recomputed another legitimate way
(the floor, `harness.compare.floor`), plus the dtype's rounding floor `atol`. The absolute bound of
the metric stays as an outer ceiling, and decides alone where the case has no floor. Between
`k_warn * floor + atol` and the failure bound the metric drifts: a warning, tracked nightly. For a
higher-is-better metric (an overlap, an agreement share) the error is its shortfall from 1; for a
second-order metric (KL divergence) the multiples are k^2 and k_warn^2.
"""
from __future__ import annotations

from harness.config import Thresholds, ceiling_key
from harness.schema import METRIC_INFO, CaseComparison, Finding, Floor

STRUCTURAL = ("prompt_ids_match", "incomplete")


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
    """One numeric metric against its floor and ceiling: a Finding with level pass, drift or fail. A metric
    with no ceiling in the thresholds is informative: its floor and ratio are shown, it never fails."""
    higher = METRIC_INFO[metric]["better"] == "higher"
    err = 1.0 - value if higher else value
    floor_err = None if floor is None else (1.0 - floor if higher else floor)
    ratio = None if floor_err is None or floor_err <= 0 else err / floor_err
    key = ceiling_key(metric)
    if key not in th.values:
        return Finding(metric, "pass", value, floor=floor, ratio=ratio, rule="info", against=against, attempt=attempt)
    ceiling_err = 1.0 - th[key] if higher else th[key]
    order = METRIC_INFO[metric]["order"]
    k, k_warn, atol = th["k"] ** order, th["k_warn"] ** order, th[f"{metric}_atol"]
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


def judge(cmp: CaseComparison, th: Thresholds, floor: Floor | None = None, against: str = "reference",
          attempt: int = 0) -> list[Finding]:
    """Every judged metric of `cmp` into `cmp.checks` (pass, drift or fail); returns those that fail or drift.

    Misaligned or missing token ids and logprobs are structural failures: no number is compared on them."""
    where = {"against": against, "attempt": attempt}
    if cmp.prompt_ids_match is False:
        found = Finding("prompt_ids_match", "fail", rule="structural", detail=(
            f"engine tokenized the prompt to {cmp.prompt_len_engine} ids, reference to {cmp.prompt_len_reference}; "
            "logprob diffs not computed on misaligned positions"), **where)
        cmp.checks = {"prompt_ids_match": found}
        return [found]
    checks = {f"incomplete:{i}": Finding("incomplete", "fail", rule="structural", detail=gap, **where)
              for i, gap in enumerate(cmp.missing)}
    for metric, info in METRIC_INFO.items():
        value = getattr(cmp, metric)
        if isinstance(value, bool) or value is None or info["section"] not in ("prefill", "distribution", "decode"):
            continue
        if metric in ("decode_common_prefix", "first_divergence"):
            continue
        checks[metric] = check_metric(metric, float(value), th, floor_of(floor, metric), against, attempt)
    if cmp.first_divergence is not None:
        detail = f"at output token {cmp.first_divergence} of {cmp.decode_len}"
        if th["greedy"] == "exact":
            checks["first_divergence"] = Finding("first_divergence", "fail", cmp.first_divergence, rule="exact",
                                                 detail=f"{detail}; greedy outputs must be identical at this dtype",
                                                 **where)
        elif not cmp.divergence_in_topk:
            checks["first_divergence"] = Finding("first_divergence", "fail", cmp.first_divergence, rule="topk",
                                                 detail=f"{detail}, and divergence_in_topk = false (not a near-tie)",
                                                 **where)
    if cmp.rouge_l is not None:
        bound = th["rouge_l_min"]
        level = "pass" if cmp.rouge_l >= bound else "fail"
        checks["rouge_l"] = Finding("rouge_l", level, cmp.rouge_l, bound, rule="min", **where)
    cmp.checks = checks
    return [f for f in checks.values() if f.level != "pass"]
