"""Prompt (prefill) comparisons: token ids, per-position logprob diffs, top-k overlap."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from harness.core.schema import TokenLogprobs


def first_id_mismatch(a: Sequence[int], b: Sequence[int]) -> int | None:
    """Index of the first differing id (or the shorter length), None if equal."""
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def position_diffs(
    reference: Sequence[TokenLogprobs | None], engine: Sequence[TokenLogprobs | None]
) -> list[float | None]:
    """|engine - reference| logprob of the actual token at each position.

    Keyed by token id: the engine's value is looked up for the reference's
    token, so an engine that scored a different token cannot look equal.
    """
    diffs: list[float | None] = []
    for ref, eng in zip(reference, engine):
        if ref is None or eng is None:
            diffs.append(None)
            continue
        diffs.append(abs(_logprob_of(eng, ref.token_id) - ref.logprob))
    return diffs


def _logprob_of(entry: TokenLogprobs, token_id: int) -> float:
    if entry.token_id == token_id:
        return entry.logprob
    for tid, lp in entry.top:
        if tid == token_id:
            return lp
    return float("-inf")


def topk_jaccard(reference: Sequence[TokenLogprobs | None], engine: Sequence[TokenLogprobs | None]) -> float | None:
    """Mean Jaccard overlap of the top-k id sets over positions both scored."""
    overlaps = []
    for ref, eng in zip(reference, engine):
        if ref is None or eng is None or not ref.top or not eng.top:
            continue
        a, b = {t for t, _ in ref.top}, {t for t, _ in eng.top}
        overlaps.append(len(a & b) / len(a | b))
    return float(np.mean(overlaps)) if overlaps else None


def summarize(diffs: Sequence[float | None], mask: Sequence[bool]) -> dict[str, float | None]:
    """prefill_max/mean/p99 over all scored positions, and max split by image/text."""
    values = np.array([d for d in diffs if d is not None], dtype=np.float64)
    image = [d for d, m in zip(diffs, mask) if m and d is not None]
    text = [d for d, m in zip(diffs, mask) if not m and d is not None]
    if values.size == 0:
        return {"prefill_max": None, "prefill_mean": None, "prefill_p99": None,
                "prefill_max_image": None, "prefill_max_text": None}
    return {
        "prefill_max": float(values.max()),
        "prefill_mean": float(values.mean()),
        "prefill_p99": float(np.percentile(values, 99)),
        "prefill_max_image": max(image) if image else None,
        "prefill_max_text": max(text) if text else None,
    }
