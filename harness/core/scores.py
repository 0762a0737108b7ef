"""Per-position logprob entries: one position's (`TokenLogprobs`) and a whole side's as columns (`Scores`).

A 1,500-token prompt judged on 12 paths, against the reference, the base and the floor runs, is tens of
thousands of positions per case, and a nightly is millions. As one Python object per position (a TokenLogprobs
with its list of top-k pairs) every stage pays tens of microseconds a position to make, spool, convert and store
them. So an output's prompt entries are columns from the engine on: `Scores` holds numpy arrays (the token, its
logprob, the top-k padded to the widest, the ranks an engine returns with them), the comparators do array
arithmetic on them, the spool writes their bytes and the store makes its Arrow columns from them. It is still a
sequence of entries (`scores[i]` is the TokenLogprobs at i, or None where the side scored nothing), so code that
reads one position (a finding's detail, `vlm-parity show`) reads it as before.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, overload

import numpy as np


@dataclass
class TokenLogprobs:
    """Logprob of the token actually at a position, plus the top-k there.

    `top` is keyed by token id (as (id, logprob) pairs, best first) because
    engines disagree on decoded strings but not on ids.
    """

    token_id: int
    logprob: float
    top: list[tuple[int, float]] = field(default_factory=list)
    # The ranks the engine returned with `top` (in `top`'s order) and with the actual token, where it returns
    # ranks: checked for what they claim (`harness.judging.compare.returned`).
    ranks: list[int] = field(default_factory=list)
    rank: int | None = None


Entry = TokenLogprobs | None
# The columns, in the order the spool writes them; the ranks' two are None where no position has any.
COLUMNS = ("present", "token", "logprob", "top_ids", "top_lps", "top_len", "ranks", "rank")


class Scores(Sequence[Entry]):
    """A side's entries as columns. `present[i]`: the side scored position i; there, `token`/`logprob` its
    entry's and `top_ids`/`top_lps` its top-k, padded (id -1, logprob nan) to the widest, `top_len` how many each
    has (past it, and where nothing was scored, id -1 and logprob nan: an adapter that builds the columns itself
    keeps to that); `ranks` the ranks returned with the top-k (nan-padded: `rank_len` says how many) and `rank`
    the token's (nan: none), both None where no position returned any."""

    __slots__ = COLUMNS

    def __init__(self, present: np.ndarray | None = None, token: np.ndarray | None = None,
                 logprob: np.ndarray | None = None, top_ids: np.ndarray | None = None,
                 top_lps: np.ndarray | None = None, top_len: np.ndarray | None = None,
                 ranks: np.ndarray | None = None, rank: np.ndarray | None = None) -> None:
        n = 0 if present is None else len(present)
        self.present = np.zeros(0, dtype=bool) if present is None else present
        self.token = np.full(n, -1, dtype=np.int64) if token is None else token
        self.logprob = np.full(n, np.nan) if logprob is None else logprob
        self.top_ids = np.full((n, 0), -1, dtype=np.int64) if top_ids is None else top_ids
        self.top_lps = np.full((n, 0), np.nan) if top_lps is None else top_lps
        self.top_len = np.zeros(n, dtype=np.int64) if top_len is None else top_len
        self.ranks, self.rank = ranks, rank

    @classmethod
    def of(cls, entries: Sequence[Entry]) -> Scores:
        """Entries as columns (a few microseconds a position: an adapter whose engine gives arrays builds the
        columns itself)."""
        if isinstance(entries, Scores):
            return entries
        n = len(entries)
        present = np.fromiter((e is not None for e in entries), dtype=bool, count=n)
        token = np.fromiter((e.token_id if e is not None else -1 for e in entries), dtype=np.int64, count=n)
        logprob = np.fromiter((e.logprob if e is not None else np.nan for e in entries), dtype=np.float64, count=n)
        tops = [e.top if e is not None else () for e in entries]
        top_len = np.fromiter(map(len, tops), dtype=np.int64, count=n)
        pairs = np.array([pair for top in tops for pair in top], dtype=np.float64).reshape(-1, 2)
        top_ids = _padded(pairs[:, 0].astype(np.int64), top_len, -1)
        top_lps = _padded(pairs[:, 1], top_len, np.nan)
        ranked = [e.ranks if e is not None else () for e in entries]
        rank_len = np.fromiter(map(len, ranked), dtype=np.int64, count=n)
        ranks = _padded(np.array([r for row in ranked for r in row], dtype=np.float64), rank_len, np.nan) \
            if rank_len.any() else None
        rank = None
        if any(e is not None and e.rank is not None for e in entries):
            rank = np.fromiter((np.nan if e is None or e.rank is None else e.rank for e in entries),
                               dtype=np.float64, count=n)
        return cls(present, token, logprob, top_ids, top_lps, top_len, ranks, rank)

    @property
    def rank_len(self) -> np.ndarray:
        """How many ranks each position returned with its top-k (0 where none)."""
        if self.ranks is None:
            return np.zeros(len(self), dtype=np.int64)
        return (~np.isnan(self.ranks)).sum(axis=1)

    def columns(self) -> tuple[np.ndarray | None, ...]:
        return tuple(getattr(self, name) for name in COLUMNS)

    def as_json(self) -> dict[str, Any]:
        """The columns as JSON data (an engine's process sends an output so: a tenth of the time of the entries
        one by one, each way; nan is JSON's NaN, which Python reads back)."""
        return {"width": self.top_ids.shape[1], **{name: None if c is None else c.tolist()
                                                   for name, c in zip(COLUMNS, self.columns())}}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Scores:
        width = int(data.get("width", 0))
        kinds = {"present": bool, "token": np.int64, "top_ids": np.int64, "top_len": np.int64}
        arrays = [None if data.get(name) is None else np.array(data[name], dtype=kinds.get(name, np.float64))
                  for name in COLUMNS]
        for i in (COLUMNS.index("top_ids"), COLUMNS.index("top_lps"), COLUMNS.index("ranks")):
            if arrays[i] is not None:
                arrays[i] = arrays[i].reshape(len(arrays[0]), -1 if len(arrays[0]) else width)
        return cls(*arrays)

    def __len__(self) -> int:
        return len(self.present)

    @overload
    def __getitem__(self, i: int) -> Entry: ...

    @overload
    def __getitem__(self, i: slice) -> Scores: ...

    def __getitem__(self, i: int | slice) -> Entry | Scores:
        if isinstance(i, slice):
            return Scores(*(None if c is None else c[i] for c in self.columns()))
        if not self.present[i]:
            return None
        k = int(self.top_len[i])
        ranks = [] if self.ranks is None else [int(r) for r in self.ranks[i] if r == r]
        rank = None if self.rank is None or self.rank[i] != self.rank[i] else int(self.rank[i])
        return TokenLogprobs(int(self.token[i]), float(self.logprob[i]),
                             list(zip(self.top_ids[i, :k].tolist(), self.top_lps[i, :k].tolist())), ranks, rank)

    def __iter__(self) -> Iterator[Entry]:
        return (self[i] for i in range(len(self)))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence) or isinstance(other, (str, bytes)):
            return NotImplemented
        if isinstance(other, Scores) and all(_same(a, b) for a, b in zip(self.columns(), other.columns())):
            return True  # the same columns (a nan logprob equal to itself, as the list it stands for had it)
        return len(self) == len(other) and list(self) == list(other)

    __hash__ = None  # type: ignore[assignment]  # mutable, as the list it stands for

    def __repr__(self) -> str:
        return f"Scores({len(self)} positions, top-{self.top_ids.shape[1]})"

    def __reduce__(self) -> tuple[Any, ...]:
        return Scores, self.columns()


def _same(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    if a is None or b is None:
        return a is b
    return a.shape == b.shape and np.array_equal(a, b, equal_nan=a.dtype.kind == "f")


def _padded(flat: np.ndarray, lengths: np.ndarray, fill: float) -> np.ndarray:
    """Rows of `lengths[i]` values each, given one after another in `flat`, as one array padded with `fill` to
    the longest row."""
    width = int(lengths.max()) if len(lengths) else 0
    out = np.full((len(lengths), width), fill, dtype=flat.dtype)
    out[np.arange(width)[None, :] < lengths[:, None]] = flat
    return out
