"""Checks of the reference and the case: does the case depend on its image at all?"""
from __future__ import annotations

from harness.compare.prefill import position_diffs
from harness.schema import EngineOutput


def image_sensitivity(reference: EngineOutput, grey: EngineOutput, image_token_id: int | None) -> dict[str, object]:
    """How far the reference moves when every image is replaced by a flat grey one of the same size.

    `after_image_max` is the largest |logprob| change at text positions after the last
    image placeholder (what the image conditions); `output_changed` whether the greedy
    output differs. None where the two prompts do not align.
    """
    changed = reference.output_ids != grey.output_ids
    if reference.prompt_ids != grey.prompt_ids or image_token_id not in reference.prompt_ids:
        return {"after_image_max": None, "output_changed": changed}
    end = len(reference.prompt_ids) - reference.prompt_ids[::-1].index(image_token_id)
    diffs = [d for d in position_diffs(reference.prompt_logprobs[end:], grey.prompt_logprobs[end:]) if d is not None]
    return {"after_image_max": max(diffs) if diffs else None, "output_changed": changed}
