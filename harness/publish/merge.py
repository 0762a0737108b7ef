"""Merge the results of `--shard i/n` runs into one run: one results file, one report.

Shards must come from the same plan: the same model weights, engine and
version, dtype, variants and case list, and together cover every shard once.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from harness.core.schema import RunResult
from harness.publish.positions import PositionStore
from harness.publish.results import read_results

# Provenance that must agree across shards for their union to be one run.
SAME = ("engine", "engine_version", "model_sha256", "model", "reference_engine", "reference_model_sha256", "dtype",
        "reference_dtype", "device", "base_variant", "plan_cases")


def merge_runs(paths: Sequence[Path], out_dir: Path | None = None) -> RunResult:
    """One RunResult from shard results; ValueError names the file and what does not fit. With `out_dir`, each
    shard's per-position files are copied into its store, one file at a time."""
    runs = [(Path(p), read_results(Path(p))) for p in paths]
    if not runs:
        raise ValueError("no results files to merge")
    first_path, first = runs[0]
    shards: dict[int, Path] = {}
    total = None
    for path, run in runs:
        shard = run.provenance.shard
        if not shard:
            raise ValueError(f"{path}: not a shard (run without --shard)")
        index, n = shard
        if total is not None and n != total:
            raise ValueError(f"{path}: shard {index}/{n} does not belong with {first_path} (shard of {total})")
        total = n
        if index in shards:
            raise ValueError(f"{path}: shard {index}/{n} given twice (also {shards[index]})")
        shards[index] = path
        for key in SAME:
            mine, theirs = getattr(run.provenance, key), getattr(first.provenance, key)
            if mine != theirs:
                raise ValueError(f"{path}: {key} is {mine!r}, but {first_path} has {theirs!r}: shards of different runs")
        if [v["name"] for v in run.variants] != [v["name"] for v in first.variants]:
            raise ValueError(f"{path}: variants differ from {first_path}'s: shards of different plans")
    missing = sorted(set(range(1, (total or 0) + 1)) - set(shards))
    if missing:
        raise ValueError(f"missing shard(s) {', '.join(f'{i}/{total}' for i in missing)}: merged results would "
                         "silently lack their cases")
    merged = RunResult(provenance=replace(first.provenance, shard=None, merged_from=[str(p) for p, _ in runs]),
                       variants=first.variants)
    for path, run in sorted(runs, key=lambda r: r[1].provenance.shard[0]):  # type: ignore[index]
        merged.cases += run.cases
        if out_dir is not None:
            PositionStore(out_dir).copy_from(PositionStore.of(path), run.cases)
        merged.skipped.update(run.skipped)
        merged.notes += [n for n in run.notes if n not in merged.notes]
    errors = [f"shard {r.provenance.shard[0]}: {r.error}" for _, r in runs if r.error]  # type: ignore[index]
    merged.error = "; ".join(errors) or None
    merged.status = "complete" if all(r.status == "complete" for _, r in runs) else "failed"
    return merged
