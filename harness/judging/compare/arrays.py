"""A side's per-position logprob entries as arrays, so comparisons run as array arithmetic.

A 1,500-token prompt judged on 12 paths, against the reference, the base and the floor runs, is tens of
thousands of positions per case; comparing TokenLogprobs objects one by one in Python costs tens of
microseconds each. `scored` turns a sequence of entries into arrays once (a few microseconds a position) and
keeps the last few (the reference's prompt is compared with every path), and `lookup` finds, for every
position at once, a side's logprob of given ids the way a per-entry search does: its own token first, then the
first of its top-k with that id.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from harness.core.schema import TokenLogprobs

_KEEP = 32  # long sequences converted and kept (the reference's prompt, a case's floor runs and paths)
_SHORT = 64  # shorter ones (greedy outputs, slices of them) are converted each time: cheap, and never reused
_CACHE: OrderedDict[int, tuple[Sequence[TokenLogprobs | None], Scored]] = OrderedDict()


@dataclass
class Scored:
    """`present[i]`: the side scored position i; there, `token`/`logprob` its entry's and `top_ids`/`top_lps`
    its top-k, padded (id -1, logprob nan) to the longest; `top_len` how many each has."""

    present: np.ndarray
    token: np.ndarray
    logprob: np.ndarray
    top_ids: np.ndarray
    top_lps: np.ndarray
    top_len: np.ndarray

    def __len__(self) -> int:
        return len(self.present)


def scored(entries: Sequence[TokenLogprobs | None]) -> Scored:
    """The entries as arrays (the last long ones are kept: the same prompt is compared many times, and the
    store writes what the judge converted)."""
    if len(entries) < _SHORT:
        return _convert(entries)
    key = id(entries)
    hit = _CACHE.get(key)
    if hit is not None and hit[0] is entries and len(hit[1]) == len(entries):
        _CACHE.move_to_end(key)
        return hit[1]
    result = _convert(entries)
    _CACHE[key] = (entries, result)
    while len(_CACHE) > _KEEP:
        _CACHE.popitem(last=False)
    return result


def _convert(entries: Sequence[TokenLogprobs | None]) -> Scored:
    n = len(entries)
    present = np.fromiter((e is not None for e in entries), dtype=bool, count=n)
    token = np.fromiter((e.token_id if e is not None else -1 for e in entries), dtype=np.int64, count=n)
    logprob = np.fromiter((e.logprob if e is not None else np.nan for e in entries), dtype=np.float64, count=n)
    tops = [e.top if e is not None else () for e in entries]
    top_len = np.fromiter(map(len, tops), dtype=np.int64, count=n)
    width = int(top_len.max()) if n else 0
    top_ids = np.full((n, width), -1, dtype=np.int64)
    top_lps = np.full((n, width), np.nan, dtype=np.float64)
    if width:
        if (top_len == width).all():  # the usual case: every entry has k candidates
            top_ids[:] = np.array([tid for top in tops for tid, _ in top], dtype=np.int64).reshape(n, width)
            top_lps[:] = np.array([lp for top in tops for _, lp in top], dtype=np.float64).reshape(n, width)
        else:
            for i, top in enumerate(tops):
                for j, (tid, lp) in enumerate(top):
                    top_ids[i, j], top_lps[i, j] = tid, lp
    return Scored(present, token, logprob, top_ids, top_lps, top_len)


def lookup(side: Scored, rows: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
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


def kth(side: Scored, rows: np.ndarray) -> np.ndarray:
    """The side's lowest top-k logprob at each of `rows` (its own logprob where it returned no top-k): what a
    token it did not return is given, an upper bound."""
    if not side.top_ids.shape[1]:
        return side.logprob[rows]
    lowest = np.where(np.isnan(side.top_lps[rows]), np.inf, side.top_lps[rows]).min(axis=1)
    return np.where(side.top_len[rows] > 0, lowest, side.logprob[rows])


def both_scored(reference: Scored, engine: Scored) -> np.ndarray:
    """The positions both sides scored (over the shorter: positions past it are compared by nothing)."""
    m = min(len(reference), len(engine))
    return np.nonzero(reference.present[:m] & engine.present[:m])[0]
