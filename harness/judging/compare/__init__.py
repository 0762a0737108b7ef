"""Comparators: pure functions of a reference and an engine EngineOutput."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

from harness.core.schema import METRIC_INFO, OUTPUT_FIELDS, CaseComparison, EngineOutput
from harness.judging.compare.decode import compare_greedy
from harness.judging.compare.distribution import distribution_stats
from harness.judging.compare.prefill import position_diffs, summarize, topk_jaccard
from harness.judging.compare.text import rouge_l
from harness.judging.compare.verdict import judge

__all__ = ["UNAVAILABLE_METRICS", "compare_outputs", "judge", "unavailable_metrics"]

# Which metrics an output field feeds (from each metric's declared `needs`): an engine that cannot
# supply the field makes them unavailable.
UNAVAILABLE_METRICS = {name: tuple(m for m, info in METRIC_INFO.items() if name in info["needs"])
                       for name in OUTPUT_FIELDS}


def unavailable_metrics(fields: Mapping[str, str]) -> dict[str, str]:
    """Metric -> reason, for output fields (-> reason) an engine cannot supply."""
    out: dict[str, str] = {}
    for name, reason in fields.items():
        for metric in UNAVAILABLE_METRICS.get(name, ()):
            out.setdefault(metric, reason)
    return out


def compare_outputs(reference: EngineOutput, engine: EngineOutput, image_token_id: int | None,
                    unavailable: Mapping[str, str] | None = None,
                    checks: Sequence[str] = ("prefill", "decode")) -> CaseComparison:
    """All metrics of one pair of outputs. Logprob diffs only where prompt ids align
    (or where the engine cannot return prompt ids, so alignment cannot be checked).

    `unavailable` maps output fields the engine cannot supply to the reason; the
    metrics they feed are left None and listed as unavailable, never computed
    from empty data. `checks` picks the comparisons that apply ("prefill", "decode").
    """
    missing_metrics = unavailable_metrics(unavailable or {})
    cmp = CaseComparison(prompt_len_reference=len(reference.prompt_ids), prompt_len_engine=len(engine.prompt_ids),
                         unavailable=missing_metrics)
    if "decode" in checks:
        cmp.rouge_l = rouge_l(reference.output_text, engine.output_text)
    if "prompt_ids_match" not in missing_metrics:
        cmp.prompt_ids_match = reference.prompt_ids == engine.prompt_ids
        if not cmp.prompt_ids_match:
            return cmp
    cmp.missing = [*_gaps("reference", reference, {}, checks), *_gaps("engine", engine, missing_metrics, checks)]
    mask = [t == image_token_id for t in reference.prompt_ids]
    cmp.image_mask = mask
    cmp.image_positions = sum(mask)
    found: dict[str, object] = {}
    if "prefill" in checks and "prefill_max" not in missing_metrics:
        diffs = position_diffs(reference.prompt_logprobs, engine.prompt_logprobs)
        cmp.prefill_diffs = diffs
        found.update(summarize(diffs, mask), prefill_topk_overlap=topk_jaccard(reference.prompt_logprobs,
                                                                               engine.prompt_logprobs))
        found.update(distribution_stats(reference.prompt_logprobs, engine.prompt_logprobs))
    if "decode" in checks and "first_divergence" not in missing_metrics:
        found.update(compare_greedy(reference.output_ids, reference.output_logprobs, engine.output_ids,
                                    engine.output_logprobs))
    for key, value in found.items():
        if key not in missing_metrics:
            setattr(cmp, key, value)
    return cmp


def _gaps(side: str, output: EngineOutput, unavailable: Mapping[str, str], checks: Sequence[str]) -> list[str]:
    """Positions a side did not score: `zip` would silently drop them from every metric."""
    gaps = []
    if "prefill" in checks and "prefill_max" not in unavailable:
        scored = int(output.prompt_logprobs.present[1:].sum())
        expected = max(len(output.prompt_ids) - 1, 0)
        if scored != expected or len(output.prompt_logprobs) != len(output.prompt_ids):
            gaps.append(f"{side} scored {scored} of {expected} prompt positions")
    if "decode" in checks and "decode_max" not in unavailable and len(output.output_logprobs) != len(output.output_ids):
        gaps.append(f"{side} returned {len(output.output_logprobs)} logprobs for {len(output.output_ids)} output tokens")
    return gaps
