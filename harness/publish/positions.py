"""A run's per-position data in a columnar store: OUT/positions/, one Parquet file per case.

Per-position arrays (both sides' token ids, logprobs and top-k, the per-position differences and image
masks, the floor's per-position error, the texts of the token ids) are nearly all of a run's bytes: as JSON
they cost about 480 bytes a position per variant, repeated in two files, and a reader had to parse all of
them to see one cell. Here each case's rows are one Parquet file, written atomically as the case completes
(a killed run keeps every case it finished), and results.json keeps the summaries, checks, findings and
provenance, with the file's name in `CaseResult.positions`. The folder is one dataset:
`pandas.read_parquet("OUT/positions")`, `pyarrow.dataset.dataset("OUT/positions")`, or DuckDB's
`read_parquet('OUT/positions/*.parquet')`.

One row per position of one series of one cell (`COLUMNS` says what each column holds). `split` takes a
case's per-position fields out (the `POSITIONAL` fields of the schema's dataclasses) and `join` puts them
back, so every reader that needs them (the report's detailed cells, `vlm-parity show`, the repro, the stage
ladder) sees the CaseResult the judge made.
"""
from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Iterable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from harness.core.files import write_atomic, write_table
from harness.core.schema import (
    CaseComparison,
    CaseResult,
    Completion,
    EngineOutput,
    RunResult,
    Scores,
    TokenLogprobs,
    without_positions,
)

if TYPE_CHECKING:
    import pyarrow as pa

DIR = "positions"

# The store's columns: name -> (Arrow type, what it holds). One declaration; the Arrow schema and the docs derive
# from it. (pyarrow is imported when a store is written or read: `vlm-parity --help` stays fast.)
COLUMNS: dict[str, tuple[str, str]] = {
    "case_id": ("string", "the case"),
    "variant": ("string", "the variant, '' for the case's own series (reference, floor, tokens)"),
    "source": ("string", "reference | engine | attempt:N (the N-th repeat) | <one of those>/completion:N (the "
                            "N+1-th answer of an n > 1 request) | comparison (against the reference) | "
                            "against_base | floor | tokens"),
    "part": ("string", "prompt | output ('' for tokens)"),
    "position": ("int32", "0-based position in the part"),
    "token_id": ("int64", "the id at the position (prompt_ids, output_ids); for tokens rows the id whose text "
                             "`text` is"),
    "entry": ("bool", "whether the series has an entry here (false past the end of a shorter list: a side "
                          "that returned fewer logprobs than ids, or fewer differences than mask positions)"),
    "scored_id": ("int64", "the id the logprob scores (null: the side scored nothing there, e.g. prompt "
                              "position 0)"),
    "logprob": ("float64", "its logprob"),
    "top_ids": ("list<int64>", "the top-k ids, best first"),
    "top_logprobs": ("list<float64>", "their logprobs"),
    "ranks": ("list<int32>", "the ranks the engine returned with the top-k, where it returns them"),
    "rank": ("int32", "the rank the engine returned for the scored token"),
    "diff": ("float64", "comparison, against_base, floor: |engine - reference| of the token's logprob"),
    "image": ("bool", "comparison, against_base: whether the position is an image placeholder"),
    "text": ("string", "tokens: the token's text"),
}


@functools.cache
def schema() -> pa.Schema:
    import pyarrow as pa

    def arrow(name: str) -> pa.DataType:
        inner = re.fullmatch(r"list<(\w+)>", name)
        return pa.list_(pa.type_for_alias(inner.group(1))) if inner else pa.type_for_alias(name)

    return pa.schema([(name, arrow(dtype)) for name, (dtype, _) in COLUMNS.items()])


_COMPARISONS = ("comparison", "against_base")


def file_name(case_id: str) -> str:
    """A case's file: its id made safe for any file system, and a hash that keeps two ids apart."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", case_id)[:80]
    return f"{safe}.{hashlib.sha1(case_id.encode()).hexdigest()[:8]}.parquet"


class _Rows:
    """A case's rows, a series at a time, as Arrow columns: the logprob entries through their array form
    (`harness.judging.compare.arrays`, which the judge has usually made already), so a 1,500-position series
    costs about a millisecond."""

    def __init__(self) -> None:
        self.parts: list[pa.Table] = []

    def extend(self, n: int, **columns: Any) -> None:
        """`n` rows: each column an Arrow array or list of `n` values, or one value for every row (absent: null)."""
        import pyarrow as pa

        arrays = []
        for field in schema():
            value = columns.get(field.name)
            if isinstance(value, pa.Array):
                arrays.append(value)
            elif isinstance(value, (np.ndarray, list)):
                arrays.append(pa.array(value, type=field.type))
            else:  # one value for every row
                arrays.append(pa.nulls(n, field.type) if value is None else pa.repeat(pa.scalar(value, field.type), n))
        self.parts.append(pa.Table.from_arrays(arrays, schema=schema()))

    def series(self, case_id: str, variant: str, source: str, part: str, ids: list[int],
               entries: list[TokenLogprobs | None]) -> None:
        import pyarrow as pa

        n = max(len(ids), len(entries))
        side = Scores.of(entries)
        pad = n - len(entries)
        present = np.concatenate([side.present, np.zeros(pad, dtype=bool)])

        def padded(values: np.ndarray) -> np.ndarray:
            return np.concatenate([values, np.zeros(pad, dtype=values.dtype)])

        def listed(values: np.ndarray, counts: np.ndarray, dtype: pa.DataType, mask: np.ndarray) -> pa.Array:
            valid = np.arange(values.shape[1])[None, :] < counts[:, None]
            offsets = pa.array(np.concatenate([[0], np.cumsum(padded(counts))]).astype(np.int32))
            return pa.ListArray.from_arrays(offsets, pa.array(values[valid], type=dtype), mask=pa.array(mask))

        ranks = {}
        if side.ranks is not None:
            counts = side.rank_len
            ranks["ranks"] = listed(np.nan_to_num(side.ranks).astype(np.int32), counts, pa.int32(),
                                   ~present | (padded(counts) == 0))
        if side.rank is not None:
            missing = ~present | np.isnan(padded(side.rank))
            ranks["rank"] = pa.array(np.where(missing, 0, padded(side.rank)).astype(np.int32), mask=missing)
        self.extend(n, case_id=case_id, variant=variant, source=source, part=part, position=np.arange(n),
                    token_id=np.asarray(ids, dtype=np.int64) if len(ids) == n else list(ids) + [None] * (n - len(ids)),
                    entry=np.arange(n) < len(entries),
                    scored_id=pa.array(padded(side.token), mask=~present),
                    logprob=pa.array(padded(side.logprob), mask=~present),
                    top_ids=listed(side.top_ids, side.top_len, pa.int64(), ~present),
                    top_logprobs=listed(side.top_lps, side.top_len, pa.float64(), ~present), **ranks)

    def output(self, case_id: str, variant: str, source: str, out: EngineOutput | Completion) -> None:
        if isinstance(out, EngineOutput):
            self.series(case_id, variant, source, "prompt", out.prompt_ids, out.prompt_logprobs)
            for j, child in enumerate(out.completions, 1):
                self.output(case_id, variant, f"{source}/completion:{j}", child)
        self.series(case_id, variant, source, "output", out.output_ids, out.output_logprobs)

    def diffs(self, case_id: str, variant: str, source: str, diffs: list[float | None], mask: list[bool]) -> None:
        n = max(len(diffs), len(mask))
        self.extend(n, case_id=case_id, variant=variant, source=source, part="prompt", position=np.arange(n),
                    entry=np.arange(n) < len(diffs), diff=diffs + [None] * (n - len(diffs)),
                    image=mask + [None] * (n - len(mask)))

    def table(self) -> pa.Table:
        import pyarrow as pa

        return pa.concat_tables(self.parts) if self.parts else schema().empty_table()


def _outputs(case: CaseResult) -> Iterator[tuple[str, str, EngineOutput | None]]:
    """(variant, source, output) of every engine output a case holds."""
    yield "", "reference", case.reference
    for name, cell in case.variants.items():
        yield name, "engine", cell.engine
        for i, attempt in enumerate(cell.attempts, 1):
            yield name, f"attempt:{i}", attempt


def split(case: CaseResult) -> tuple[CaseResult, pa.Table]:
    """The case without its per-position data, and that data as rows (the case itself is left as it is)."""
    rows, cid = _Rows(), case.case_id
    for variant, source, out in _outputs(case):
        if out is not None:
            rows.output(cid, variant, source, out)
    for name, cell in case.variants.items():
        for source in _COMPARISONS:
            if (cmp := getattr(cell, source)) is not None:
                rows.diffs(cid, name, source, cmp.prefill_diffs, cmp.image_mask)
    if case.floor is not None:
        rows.diffs(cid, "", "floor", case.floor.diffs, [])
    rows.extend(len(case.tokens), case_id=cid, variant="", source="tokens", part="", position=0,
                token_id=[int(t) for t in case.tokens], text=list(case.tokens.values()))
    return strip(case), rows.table()


def strip(case: CaseResult) -> CaseResult:
    """The case without its per-position data (the case itself is left as it is)."""
    bare = without_positions
    variants = {name: replace(cell, engine=bare(cell.engine), attempts=[bare(a) for a in cell.attempts],
                              comparison=bare(cell.comparison), against_base=bare(cell.against_base))
                for name, cell in case.variants.items()}
    return replace(bare(case), reference=bare(case.reference), floor=bare(case.floor), variants=variants)


Columns = dict[str, list[Any]]


def join(case: CaseResult, table: pa.Table) -> CaseResult:
    """`case` (as `split` left it) with its per-position data from `table` put back."""
    grouped = _series(table)
    full = without_positions(case)  # fresh copies to fill
    assert full is not None
    tokens = grouped.get(("", "tokens", ""), {})
    full.tokens = {str(t): text for t, text in zip(tokens.get("token_id", []), tokens.get("text", []))}
    full.variants = {name: replace(cell, engine=_restore(cell.engine, grouped, name, "engine"),
                                   attempts=[_restore(a, grouped, name, f"attempt:{i}")
                                             for i, a in enumerate(cell.attempts, 1)],
                                   **{source: _restore_diffs(getattr(cell, source), grouped.get((name, source,
                                                                                                 "prompt")))
                                      for source in _COMPARISONS})
                     for name, cell in case.variants.items()}
    full.reference = _restore(case.reference, grouped, "", "reference")
    if case.floor is not None:
        floor = grouped.get(("", "floor", "prompt"), {})
        full.floor = replace(case.floor, diffs=_kept(floor, "diff"))
    return full


def _series(table: pa.Table) -> dict[tuple[str, str, str], Columns]:
    """The table's columns cut into its series (each written as one run of rows), by (variant, source, part)."""
    cols = table.to_pydict()
    keys = list(zip(cols["variant"], cols["source"], cols["part"]))
    grouped: dict[tuple[str, str, str], Columns] = {}
    start = 0
    for end in range(1, len(keys) + 1):
        if end == len(keys) or keys[end] != keys[start]:
            grouped[keys[start]] = {name: column[start:end] for name, column in cols.items()}
            start = end
    return grouped


def _kept(series: Columns, name: str) -> list[Any]:
    """A column's values where the series has an entry."""
    return [v for v, entry in zip(series.get(name, []), series.get("entry", [])) if entry]


def _restore(out: Any, grouped: dict[tuple[str, str, str], Columns], variant: str, source: str) -> Any:
    if out is None:
        return None
    changes: dict[str, Any] = {}
    parts = ("prompt", "output") if isinstance(out, EngineOutput) else ("output",)
    for part in parts:
        series = grouped.get((variant, source, part), {})
        changes[f"{part}_ids"] = [t for t in series.get("token_id", []) if t is not None]
        changes[f"{part}_logprobs"] = [
            None if sid is None else TokenLogprobs(sid, lp, list(zip(ids or [], lps or [])), ranks or [], rank)
            for sid, lp, ids, lps, ranks, rank, entry in zip(
                *(series.get(c, []) for c in ("scored_id", "logprob", "top_ids", "top_logprobs", "ranks", "rank",
                                              "entry"))) if entry]
    if isinstance(out, EngineOutput):
        changes["completions"] = [_restore(c, grouped, variant, f"{source}/completion:{j}")
                                  for j, c in enumerate(out.completions, 1)]
    return replace(out, **changes)


def _restore_diffs(cmp: CaseComparison | None, series: Columns | None) -> CaseComparison | None:
    if cmp is None:
        return None
    series = series or {}
    return replace(cmp, prefill_diffs=_kept(series, "diff"),
                   image_mask=[m for m in series.get("image", []) if m is not None])


def loaded(run: RunResult, results_dir: Path) -> RunResult:
    """The run with every case's per-position data read back (a small run: tests, one case's page)."""
    store = PositionStore(results_dir)
    return replace(run, cases=[store.load(c) for c in run.cases])


class PositionStore:
    """The store of one results folder: `write` a case's rows as it completes, `load` them back."""

    def __init__(self, results_dir: Path) -> None:
        self.results_dir = Path(results_dir)
        self.dir = self.results_dir / DIR

    @classmethod
    def of(cls, results: Path) -> PositionStore:
        """The store beside a results file (results.json, results.jsonl) or in a results folder."""
        results = Path(results)
        return cls(results if results.is_dir() else results.parent)

    def clear(self) -> None:
        """A fresh run in this folder: no earlier run's rows read as this one's."""
        if self.dir.is_dir():
            for path in self.dir.glob("*.parquet"):
                path.unlink()

    def write(self, case: CaseResult) -> CaseResult:
        """Write the case's rows (atomically: a killed run leaves whole files only); the slim case, naming them."""
        slim, table = split(case)
        if not table.num_rows:  # skipped, or an error before any output: nothing per position
            return slim
        name = file_name(case.case_id)
        write_table(self.dir / name, table, use_dictionary=["case_id", "variant", "source", "part"])
        slim.positions = f"{DIR}/{name}"
        return slim

    def load(self, case: CaseResult) -> CaseResult:
        """The case with its per-position data (as it is where it has none: skipped, or an error before judging)."""
        if not case.positions:
            return case
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = self.results_dir / case.positions
        try:
            table = pq.read_table(path)
        except (OSError, pa.ArrowInvalid) as exc:
            raise ValueError(f"{path}: cannot read case {case.case_id}'s per-position data: {exc}") from exc
        return join(case, table)

    def copy_from(self, other: PositionStore, cases: Iterable[CaseResult]) -> None:
        """Bring the files of `cases` over from another folder's store (merging shards), one file at a time."""
        for case in cases:
            if case.positions:
                source, target = other.results_dir / case.positions, self.results_dir / case.positions
                if source.resolve() != target.resolve():
                    write_atomic(target, source.read_bytes())
