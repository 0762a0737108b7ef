"""Array arithmetic over a side's per-position entries (`harness.core.scores.Scores`, the columns an output's
prompt entries are held in; a short list of output steps is made columns here), so a 1,500-token prompt costs
microseconds a position, not tens. `lookup` finds, for every position at once, a side's logprob of given ids the
way a per-entry search does: its own token first, then the first of its top-k with that id.
"""
from __future__ import annotations

import numpy as np

from harness.core.scores import Scores


def lookup(side: Scores, rows: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The side's logprob of `ids[r, j]` at position `rows[r]`: its own token's logprob, else the first of its
    top-k with that id; and whether it was found (where not, the value is nan)."""
    token, lps, top_ids, top_lps = side.token[rows], side.logprob[rows], side.top_ids[rows], side.top_lps[rows]
    own = ids == token[:, None]
    if top_ids.shape[1]:
        match = ids[:, :, None] == top_ids[:, None, :]
        first = match.argmax(axis=2)
        in_top = match.any(axis=2)
        from_top = np.take_along_axis(top_lps, first, axis=1)
    else:
        in_top = np.zeros(ids.shape, dtype=bool)
        from_top = np.full(ids.shape, np.nan)
    values = np.where(own, lps[:, None], np.where(in_top, from_top, np.nan))
    return values, own | in_top


def kth(side: Scores, rows: np.ndarray) -> np.ndarray:
    """The side's lowest top-k logprob at each of `rows` (its own logprob where it returned no top-k): what a
    token it did not return is given, an upper bound."""
    if not side.top_ids.shape[1]:
        return side.logprob[rows]
    lowest = np.where(np.isnan(side.top_lps[rows]), np.inf, side.top_lps[rows]).min(axis=1)
    return np.where(side.top_len[rows] > 0, lowest, side.logprob[rows])


def both_scored(reference: Scores, engine: Scores) -> np.ndarray:
    """The positions both sides scored (over the shorter: positions past it are compared by nothing)."""
    m = min(len(reference), len(engine))
    return np.nonzero(reference.present[:m] & engine.present[:m])[0]
