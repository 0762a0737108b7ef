"""Prompt (prefill) comparisons: token ids, per-position logprob diffs, top-k overlap."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from harness.core.schema import Scores, TokenLogprobs
from harness.judging.compare.arrays import both_scored, lookup


def first_id_mismatch(a: Sequence[int], b: Sequence[int]) -> int | None:
    """Index of the first differing id (or the shorter length), None if equal."""
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def position_diffs(
    reference: Sequence[TokenLogprobs | None], engine: Sequence[TokenLogprobs | None]
) -> list[float | None]:
    """|engine - reference| logprob of the actual token at each position (None where either side scored
    nothing; over the shorter of the two).

    Keyed by token id: the engine's value is looked up for the reference's
    token, so an engine that scored a different token cannot look equal (-inf: an infinite difference).
    """
    ref, eng = Scores.of(reference), Scores.of(engine)
    rows = both_scored(ref, eng)
    values, found = lookup(eng, rows, ref.token[rows][:, None])
    with np.errstate(invalid="ignore"):  # -inf against -inf is nan, as Python's floats make it
        found_diffs = np.abs(np.where(found[:, 0], values[:, 0], -np.inf) - ref.logprob[rows])
    diffs: list[float | None] = [None] * min(len(reference), len(engine))
    for i, d in zip(rows.tolist(), found_diffs.tolist()):
        diffs[i] = d
    return diffs


def topk_jaccard(reference: Sequence[TokenLogprobs | None], engine: Sequence[TokenLogprobs | None]) -> float | None:
    """Mean Jaccard overlap of the top-k id sets over positions both scored (an id listed twice counts once)."""
    ref, eng = Scores.of(reference), Scores.of(engine)
    rows = both_scored(ref, eng)
    rows = rows[(ref.top_len[rows] > 0) & (eng.top_len[rows] > 0)]
    if not rows.size:
        return None
    a, b = ref.top_ids[rows], eng.top_ids[rows]  # padded with -1, never an id
    first_a = _first_of_each(a)
    inter = ((a[:, :, None] == b[:, None, :]).any(axis=2) & first_a & (a >= 0)).sum(axis=1)
    size_a = (first_a & (a >= 0)).sum(axis=1)
    size_b = (_first_of_each(b) & (b >= 0)).sum(axis=1)
    return float(np.mean(inter / (size_a + size_b - inter)))


def _first_of_each(ids: np.ndarray) -> np.ndarray:
    """Whether each id is the first of its value in its row (sets count an id once)."""
    ordered = np.sort(ids, axis=1)
    if not ((ordered[:, 1:] == ordered[:, :-1]) & (ordered[:, 1:] >= 0)).any():  # the usual case: no id twice
        return np.ones(ids.shape, dtype=bool)
    earlier = np.tril(np.ones((ids.shape[1], ids.shape[1]), dtype=bool), -1)
    return ~((ids[:, :, None] == ids[:, None, :]) & earlier[None]).any(axis=2)


def summarize(diffs: Sequence[float | None], mask: Sequence[bool]) -> dict[str, float | None]:
    """prefill_max/mean/p99 over all scored positions, and max split by image/text."""
    given = np.fromiter((d is not None for d in diffs), dtype=bool, count=len(diffs))
    all_values = np.array(diffs, dtype=np.float64).reshape(-1)  # None is nan here, and not given
    values = all_values[given]
    if values.size == 0:
        return {"prefill_max": None, "prefill_mean": None, "prefill_p99": None,
                "prefill_max_image": None, "prefill_max_text": None}
    masked = np.arange(len(diffs)) < len(mask)  # positions past the mask are neither image nor text
    image = np.zeros(len(diffs), dtype=bool)
    image[:min(len(mask), len(diffs))] = np.asarray(mask[:len(diffs)], dtype=bool)
    return {
        "prefill_max": float(values.max()),
        "prefill_mean": float(values.mean()),
        "prefill_p99": float(np.percentile(values, 99)),
        "prefill_max_image": _largest(all_values[given & image]),
        "prefill_max_text": _largest(all_values[given & masked & ~image]),
    }


def _largest(values: np.ndarray) -> float | None:
    return float(values.max()) if values.size else None
