"""Comparators: pure functions of a reference and an engine EngineOutput."""
from __future__ import annotations

from harness.compare.decode import compare_greedy
from harness.compare.prefill import position_diffs, summarize, topk_jaccard
from harness.compare.text import rouge_l
from harness.compare.verdict import judge
from harness.schema import CaseComparison, EngineOutput

__all__ = ["compare_outputs", "judge"]


def compare_outputs(reference: EngineOutput, engine: EngineOutput, image_token_id: int | None) -> CaseComparison:
    """All metrics of one case. Logprob diffs only where prompt ids align."""
    cmp = CaseComparison(
        prompt_ids_match=reference.prompt_ids == engine.prompt_ids,
        prompt_len_reference=len(reference.prompt_ids),
        prompt_len_engine=len(engine.prompt_ids),
        rouge_l=rouge_l(reference.output_text, engine.output_text),
    )
    if not cmp.prompt_ids_match:
        return cmp
    cmp.missing = [*_gaps("reference", reference), *_gaps("engine", engine)]
    mask = [t == image_token_id for t in reference.prompt_ids]
    diffs = position_diffs(reference.prompt_logprobs, engine.prompt_logprobs)
    cmp.image_mask = mask
    cmp.image_positions = sum(mask)
    cmp.prefill_diffs = diffs
    for key, value in summarize(diffs, mask).items():
        setattr(cmp, key, value)
    cmp.prefill_topk_overlap = topk_jaccard(reference.prompt_logprobs, engine.prompt_logprobs)
    greedy = compare_greedy(reference.output_ids, reference.output_logprobs, engine.output_ids, engine.output_logprobs)
    for key, value in greedy.items():
        setattr(cmp, key, value)
    return cmp


def _gaps(side: str, output: EngineOutput) -> list[str]:
    """Positions a side did not score: `zip` would silently drop them from every metric."""
    gaps = []
    scored = sum(p is not None for p in output.prompt_logprobs[1:])
    if scored != max(len(output.prompt_ids) - 1, 0) or len(output.prompt_logprobs) != len(output.prompt_ids):
        gaps.append(f"{side} scored {scored} of {max(len(output.prompt_ids) - 1, 0)} prompt positions")
    if len(output.output_logprobs) != len(output.output_ids):
        gaps.append(f"{side} returned {len(output.output_logprobs)} logprobs for {len(output.output_ids)} output tokens")
    return gaps
