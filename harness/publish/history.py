"""Nightly history: one summary per run, regressions against the last one, and every cell's metrics.

The history is a Parquet dataset, a folder (`--history DIR`): `runs/` holds one row per run (its summary:
headline metrics, counts, known and drifting cells, the suite's statistics, so trends need no old results
files) and `cells/` one row per run x case x variant x metric (value, floor, ratio, level), so a trend across
runs, models or engines is a query:
`pandas.read_parquet("DIR/cells").query("metric == 'prefill_max'").groupby(["model", "date"]).ratio.max()`.
Each run adds one file to each, written atomically. A `--history FILE.jsonl` (the older history: one JSON
line per run) is still read and appended to, and `import_jsonl` brings its runs into a dataset.
"""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from harness.config import fail, mapping
from harness.core.files import write_table
from harness.core.notes import note
from harness.core.schema import METRIC_INFO, PASSING, RunResult, shown_in
from harness.judging.suite import cell_ratios, summary
from harness.publish.results import json_safe

# name in the history -> (metric, how cases and variants are summarized: their worst); from the schema.
_SUMMARIZED = {(name if info["headline"] == "max" else f"{name}_{info['headline']}"): (name, info["headline"])
               for name, info in METRIC_INFO.items() if info["headline"]}
# Each number of a history entry with the direction that is better: the metrics', and the run's throughput.
BETTER = {**{name: METRIC_INFO[metric]["better"] for name, (metric, _) in _SUMMARIZED.items()},
          "throughput_tok_s": "higher"}
HEADLINE = tuple(BETTER)
HEADLINE_FLOORS = shown_in("floor")  # the largest floor of the run, per metric
# A regression band's fields by direction: lower is better, a jump by more than `factor` and above `floor`;
# higher is better, a drop by more than `drop` (absolute) or, with `max_drop`, by more than that fraction.
BAND_FIELDS = {"lower": (("factor", "floor", "reason"), ()), "higher": (("reason",), ("drop", "max_drop"))}


def summarize_run(run: RunResult) -> dict[str, Any]:
    """Headline metrics (the worst value over every case and variant), the worst ratio to the floor per
    judged metric, the cells that drift, and engine throughput."""
    cmps = [v.comparison for c in run.cases for v in c.variants.values() if v.comparison is not None]

    def summarize(key: str, how: str) -> float | None:
        values = [getattr(c, key) for c in cmps if getattr(c, key) is not None]
        return (max if how == "max" else min)(values) if values else None

    ratios: dict[str, float] = {}
    for cmp in cmps:
        for name, check in cmp.checks.items():
            if check.ratio is not None and check.rule != "info":
                ratios[name] = max(ratios.get(name, 0.0), check.ratio)
    floors = {m: max(v for c in run.cases if c.floor and (v := c.floor.metrics.get(m)) is not None)
              for m in HEADLINE_FLOORS if any(c.floor and c.floor.metrics.get(m) is not None for c in run.cases)}

    p = run.provenance
    return {
        "date": p.date, "git_commit": p.git_commit, "engine": p.engine,
        "engine_version": p.engine_info.get("engine_version") or p.engine_version, "model": p.model_name or p.model,
        "model_sha256": p.model_sha256, "dtype": p.dtype, "verdict": run.verdict,
        "counts": run.counts(),
        "not_passing": sorted(c.case_id for c in run.cases if c.verdict not in PASSING),
        "passing": sorted(c.case_id for c in run.cases if c.verdict in PASSING),
        "variants": [v["name"] for v in run.variants],
        "metrics": {**{name: summarize(key, how) for name, (key, how) in _SUMMARIZED.items()},
                    "throughput_tok_s": p.throughput_tok_s},
        "ratios": ratios, "floors": floors,
        "drifting": sorted(f"{c.case_id}/{name}/{f.metric}" for c in run.cases for name, v in c.variants.items()
                           for f in v.drifting),
        "known": known_cells(run),
        # the suite's ratios to the floor per metric (`harness.judging.suite`): the nightly trend of a whole engine
        "suite": {m: summary(v) for m, v in cell_ratios(run).items()},
        "suite_drift": sorted(s.metric for s in run.suite if s.drifts),
    }


def known_cells(run: RunResult) -> list[str]:
    """The run's known cells, 'case/variant'."""
    return sorted(f"{c.case_id}/{name}" for c in run.cases for name, v in c.variants.items() if v.verdict == "known")


def mark_new_known(run: RunResult, previous: dict[str, Any]) -> None:
    """Known cells that passed in `previous` (the last history entry of this engine, dtype and model) get a
    `known_new` note: a bug on record that now reaches a cell it did not, which a person should look at.
    A case in `passing` had every cell pass or known, so a cell not known then passed. An entry written
    before the history kept known cells says nothing."""
    if "known" not in previous:
        return
    before = set(previous["known"])
    for case in run.cases:
        for name, cell in case.variants.items():
            ran = case.case_id in previous.get("passing", []) and name in previous.get("variants", [])
            if cell.verdict == "known" and f"{case.case_id}/{name}" not in before and ran:
                cell.notes.append(note("known_new", previous=previous.get("date") or "earlier run"))


RUNS, CELLS = "runs", "cells"
# The columns of a run's row besides its whole summary (`entry`, JSON): what a query selects runs by.
RUN_KEYS = ("date", "git_commit", "engine", "engine_version", "model", "model_sha256", "dtype", "verdict")


def is_dataset(path: Path) -> bool:
    """A history folder (the dataset), not the older JSON-lines file."""
    return path.suffix != ".jsonl"


def load_history(path: Path) -> list[dict[str, Any]]:
    """Entries oldest first; a missing history is empty; a bad line or file names itself."""
    if is_dataset(path):
        return _load_runs(path)
    if not path.exists():
        return []
    entries = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                entries.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}: line {number}: not valid JSON: {exc}") from exc
    return entries


def append_history(path: Path, entry: dict[str, Any], run: RunResult | None = None) -> None:
    """Add a run: its summary row (and, in a dataset, its cells' rows)."""
    if not is_dataset(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as f:
            f.write(json.dumps(json_safe(entry), allow_nan=False) + "\n")
        return
    name = _file_name(entry)
    _write(path / RUNS / name, [_run_row(entry)])
    if run is not None:
        _write(path / CELLS / name, cell_rows(run, entry))


def import_jsonl(source: Path, dataset: Path) -> int:
    """The runs of an older JSON-lines history added to a dataset (their summaries: the lines held no cells);
    the number imported. A run already there (same date, commit, engine, model and dtype) is not added twice."""
    have = {_file_name(e) for e in _load_runs(dataset)}
    added = 0
    for entry in load_history(source):
        if _file_name(entry) not in have:
            append_history(dataset, entry)
            added += 1
    return added


def cell_rows(run: RunResult, entry: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per case x variant x judged metric of the run, with the run's keys."""
    keys = {k: entry.get(k) for k in RUN_KEYS}
    return [{**keys, "case_id": case.case_id, "variant": name, "cell_verdict": cell.verdict, "against": f.against,
             "attempt": f.attempt, "metric": metric, "value": json_safe(f.value), "floor": json_safe(f.floor),
             "ratio": json_safe(f.ratio), "bound": json_safe(f.bound), "level": f.level}
            for case in run.cases for name, cell in case.variants.items()
            for cmp in (cell.comparison, cell.against_base) if cmp is not None
            for metric, f in cmp.checks.items()]


def _file_name(entry: dict[str, Any]) -> str:
    """A run's file in the dataset: its date first (files sort by time), then what tells two runs apart."""
    key = json.dumps([entry.get(k) for k in ("date", "git_commit", "engine", "model", "dtype")])
    date = re.sub(r"[^0-9A-Za-z]", "", str(entry.get("date") or ""))
    return f"{date}-{hashlib.sha1(key.encode()).hexdigest()[:10]}.parquet"


def _run_row(entry: dict[str, Any]) -> dict[str, Any]:
    return {**{k: entry.get(k) for k in RUN_KEYS}, "entry": json.dumps(json_safe(entry), allow_nan=False)}


def _write(path: Path, rows: list[dict[str, Any]]) -> None:
    import pyarrow as pa

    write_table(path, pa.Table.from_pylist(rows))


def _load_runs(path: Path) -> list[dict[str, Any]]:
    """The summaries of a dataset's runs, oldest first."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    entries = []
    for file in sorted((path / RUNS).glob("*.parquet")):
        try:
            rows = pq.read_table(file, columns=["entry"]).to_pylist()
        except (OSError, pa.ArrowInvalid, KeyError) as exc:
            raise ValueError(f"{file}: not a history run file: {exc}") from exc
        entries += [json.loads(r["entry"]) for r in rows]
    return sorted(entries, key=lambda e: str(e.get("date") or ""))


def regressions(previous: dict[str, Any], current: dict[str, Any], bands: dict[str, Any]) -> list[str]:
    """What got worse since `previous`, each with both values and the band it broke."""
    found = []
    newly_failing = sorted(set(current["not_passing"]) & set(previous.get("passing", [])))
    if newly_failing:
        found.append(f"new failures: {', '.join(newly_failing)}")
    newly_drifting = sorted(set(current.get("drifting", [])) - set(previous.get("drifting", [])))
    if newly_drifting:
        found.append(f"newly drifting (above k_warn x floor, within the bound): {', '.join(newly_drifting)}")
    for metric, band in bands.items():
        before, now = previous["metrics"].get(metric), current["metrics"].get(metric)
        if before is None or now is None:
            continue
        if BETTER[metric] == "lower":
            if now > before * band["factor"] and now - before > band["floor"]:
                found.append(f"{metric} {before:.3g} -> {now:.3g} (more than {band['factor']}x and "
                             f"+{band['floor']:.0e}: {band['reason']})")
        elif "max_drop" in band:
            if before > 0 and (before - now) / before > band["max_drop"]:
                found.append(f"{metric} {before:.4g} -> {now:.4g} ({(now - before) / before:+.0%}, "
                             f"allowed -{band['max_drop']:.0%}: {band['reason']})")
        elif before - now > band["drop"]:
            found.append(f"{metric} {before:.3g} -> {now:.3g} (dropped more than {band['drop']}: {band['reason']})")
    return found


def check_bands(bands: Any, source: str) -> None:
    """Regression bands (gate.yaml `regressions:`) against the history's numbers: each names one, and has the
    fields of its direction (which comes from the metric, never from the file)."""
    path = ("regressions",)
    for name, band in mapping(bands, source, path).items():
        if name not in BETTER:
            fail(source, (*path, name), f"unknown metric {name!r} in the history (known: {', '.join(BETTER)})")
        required, one_of = BAND_FIELDS[BETTER[name]]
        fields = mapping(band, source, (*path, name))
        unknown = set(fields) - {*required, *one_of}
        if unknown:
            fail(source, (*path, name, sorted(unknown)[0]), f"not a field of a {BETTER[name]}-is-better band "
                                                            f"(fields: {', '.join((*required, *one_of))})")
        missing = [f for f in required if f not in fields]
        if one_of and sum(f in fields for f in one_of) != 1:
            missing.append(f"exactly one of {', '.join(one_of)}")
        if missing:
            fail(source, (*path, name), f"needs {' and '.join(missing)}")
