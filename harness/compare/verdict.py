"""Turn a CaseComparison and the thresholds in force into pass/fail with reasons."""
from __future__ import annotations

from harness.config import Thresholds
from harness.schema import CaseComparison


def judge(cmp: CaseComparison, th: Thresholds) -> tuple[str, list[str]]:
    """Every violated threshold becomes a reason naming the metric and both values."""
    if cmp.prompt_ids_match is False:
        return "fail", [
            f"prompt_ids_match = false: engine tokenized the prompt to {cmp.prompt_len_engine} ids, "
            f"reference to {cmp.prompt_len_reference}; logprob diffs not computed on misaligned positions"
        ]
    reasons = [f"incomplete output: {gap}" for gap in cmp.missing]
    for metric in ("prefill_max", "prefill_mean", "decode_max"):
        value = getattr(cmp, metric)
        # `not <=` so that NaN fails; None only where nothing was scored (empty prompt or output).
        if value is not None and not value <= th[metric]:
            reasons.append(f"{metric} = {value:.3g} > {th[metric]:.3g}")
    overlap = cmp.prefill_topk_overlap
    if overlap is not None and not overlap >= th["prefill_topk_overlap_min"]:
        reasons.append(f"prefill_topk_overlap = {overlap:.3f} < {th['prefill_topk_overlap_min']}")
    if cmp.first_divergence is not None:
        where = f"first_divergence at output token {cmp.first_divergence} of {cmp.decode_len}"
        if th["greedy"] == "exact":
            reasons.append(f"{where}; greedy outputs must be identical at this dtype")
        elif not cmp.divergence_in_topk:
            reasons.append(f"{where}, and divergence_in_topk = false (not a near-tie)")
    if cmp.rouge_l is not None and not cmp.rouge_l >= th["rouge_l_min"]:
        reasons.append(f"rouge_l = {cmp.rouge_l:.3f} < {th['rouge_l_min']}")
    return ("fail", reasons) if reasons else ("pass", [])
