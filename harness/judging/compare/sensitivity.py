"""Checks of the reference and the case: does the case depend on its image at all?"""
from __future__ import annotations

from collections.abc import Collection

from harness.core.schema import EngineOutput
from harness.judging.compare.prefill import position_diffs


def image_sensitivity(reference: EngineOutput, grey: EngineOutput,
                      placeholders: int | None | Collection[int | None]) -> dict[str, object]:
    """How far the reference moves when every image is replaced by a flat grey one of the same size (and
    every video by its first frame, frozen).

    `after_image_max` is the largest |logprob| change at text positions after the last
    image or video placeholder (`placeholders`: their token ids; what the media condition);
    `output_changed` whether the greedy output differs. None where the two prompts do not align.
    """
    tokens = set(placeholders) if isinstance(placeholders, Collection) else {placeholders}
    changed = reference.output_ids != grey.output_ids
    at = [i for i, t in enumerate(reference.prompt_ids) if t in tokens]
    if reference.prompt_ids != grey.prompt_ids or not at:
        return {"after_image_max": None, "output_changed": changed}
    end = at[-1] + 1
    diffs = [d for d in position_diffs(reference.prompt_logprobs[end:], grey.prompt_logprobs[end:]) if d is not None]
    return {"after_image_max": max(diffs) if diffs else None, "output_changed": changed}
