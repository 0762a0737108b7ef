"""From measured subprocesses to the bench's figures, its table and its JSON: pure functions.

Labels of the measured runs (what `command` runs under each name):
  single              `run --variants base` on the default cases
  alone-<role>-<i>    each engine stream of `single` re-run alone on the same requests (role: reference, engine)
  matrix              `run` with the default variants
  matrix-alone-<role>-<i>  each stream of `matrix` re-run alone on the same requests
  matrix-stored       `run` with the default variants and stored references (the README's run)
  path-<variant>      `run --variants base,<variant> --reference stored`
  stored              `run --variants base --reference stored`
  per-case-process    the engine-per-case style on N synthetic cases, each engine in a fresh process
  per-case            the same, each engine a fresh object in one process (imports paid once)
                      (the harness side of both is `scale-N`)
  scale-<n>           `run --variants base` on n synthetic cases
  import-<module>     `python -c "import <module>"`
  load                model resolution and loading (probe `load`)
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from harness.bench.measure import Measured

# The targets: (comparison, bound).
TARGETS = {
    "single / irreducible": ("<=", 1.15),
    "matrix / irreducible": ("<=", 1.25),
    "stored / engine alone": ("<=", 1.10),
    "per-case / harness": (">=", 10.0),
    "marginal s/case, last / first step": ("<=", 1.5),  # "flat": the last step costs at most 1.5x the first
}


PATH_PREFIX = "path-"


@dataclass
class Figure:
    """One line of the table; `value` None when it was not measured (with `note` saying why)."""

    part: str
    name: str
    value: float | None
    unit: str
    target: str = ""
    ok: bool | None = None
    note: str = ""


def _ratio(part: str, name: str, top: float | None, bottom: float | None, note: str = "") -> Figure:
    op, bound = TARGETS[name]
    if top is None or bottom is None or bottom <= 0:
        return Figure(part, name, None, "x", f"{op} {bound}", None, note or "not measured")
    value = top / bottom
    return Figure(part, name, value, "x", f"{op} {bound}", value <= bound if op == "<=" else value >= bound, note)


def _wall(runs: dict[str, Measured], label: str) -> float | None:
    run = runs.get(label)
    return run.wall_s if run is not None and run.ok else None


def _cpu(runs: dict[str, Measured], *labels: str) -> float | None:
    """CPU seconds summed over these runs; None unless every one was measured."""
    found = [runs.get(label) for label in labels]
    if not found or any(r is None or not r.ok or r.cpu_s is None for r in found):
        return None
    return sum(r.cpu_s for r in found)


def _cpu_ratio(part: str, name: str, top: float | None, bottom: float | None) -> Figure:
    """The same ratio in CPU seconds of the process trees: no target, a check on how much of a
    wall-time ratio is other load on the machine."""
    value = top / bottom if top is not None and bottom else None
    return Figure(part, f"{name}, CPU seconds", value, "x", note="" if value is not None else "not measured")


def _alone(runs: dict[str, Measured], role: str, prefix: str = "alone") -> list[Measured]:
    return [m for label, m in sorted(runs.items()) if label.startswith(f"{prefix}-{role}-") and m.ok]


def _alone_total(runs: dict[str, Measured], role: str, prefix: str = "alone") -> float | None:
    found = _alone(runs, role, prefix)
    return sum(m.report["total_s"] for m in found) if found else None


def single_figures(runs: dict[str, Measured]) -> list[Figure]:
    """1: the single-path run against its engine and reference run alone on the same requests."""
    single, engine, reference = _wall(runs, "single"), _alone_total(runs, "engine"), _alone_total(runs, "reference")
    irreducible = engine + reference if engine is not None and reference is not None else None
    return [
        Figure("1 single", "single-path run (--variants base), wall", single, "s"),
        Figure("1 single", "engine alone: start + generate, all cases", engine, "s"),
        Figure("1 single", "reference alone: load + forward/generate, all cases", reference, "s"),
        Figure("1 single", "irreducible: engine + reference", irreducible, "s"),
        _ratio("1 single", "single / irreducible", single, irreducible),
        _cpu_ratio("1 single", "single / irreducible", _cpu(runs, "single"),
                   _cpu(runs, *[label for label in runs if label.startswith("alone-")])),
    ]


def matrix_figures(runs: dict[str, Measured]) -> list[Figure]:
    """2: the default matrix against its own streams run alone (every engine group and the reference)."""
    matrix, single = _wall(runs, "matrix"), _wall(runs, "single")
    engine, reference = _alone_total(runs, "engine", "matrix-alone"), _alone_total(runs, "reference", "matrix-alone")
    irreducible = engine + reference if engine is not None and reference is not None else None
    return [Figure("2 matrix", "default matrix run (live reference), wall", matrix, "s"),
            Figure("2 matrix", "its engine groups alone: start + generate", engine, "s"),
            Figure("2 matrix", "its reference alone", reference, "s"),
            _ratio("2 matrix", "matrix / irreducible", matrix, irreducible),
            _cpu_ratio("2 matrix", "matrix / irreducible", _cpu(runs, "matrix"),
                       _cpu(runs, *[label for label in runs if label.startswith("matrix-alone-")])),
            Figure("2 matrix", "matrix / single (paths' own work included)",
                   matrix / single if matrix and single else None, "x")]


def path_figures(runs: dict[str, Measured]) -> list[Figure]:
    """Each default path's cost: its base+path run minus the base-only run, as a share of the default run
    (all with stored references: what the README's run costs)."""
    default, base = _wall(runs, "matrix-stored"), _wall(runs, "stored")
    figures = [Figure("paths", "default run (stored references), wall", default, "s")]
    for label in (label for label in runs if label.startswith(PATH_PREFIX)):
        wall = _wall(runs, label)
        cost = wall - base if wall is not None and base is not None else None
        share = f"{cost / default:.0%} of the default run" if cost is not None and default else ""
        figures.append(Figure("paths", f"{label.removeprefix(PATH_PREFIX)}: added to the base path", cost, "s",
                              note=share))
    return figures


def stored_figures(runs: dict[str, Measured]) -> list[Figure]:
    stored, engine = _wall(runs, "stored"), _alone_total(runs, "engine")
    return [Figure("3 stored", "recording the references once (vlm-parity record), wall", _wall(runs, "record"), "s"),
            Figure("3 stored", "stored-reference run (--variants base --reference stored), wall", stored, "s"),
            _ratio("3 stored", "stored / engine alone", stored, engine),
            _cpu_ratio("3 stored", "stored / engine alone", _cpu(runs, "stored"),
                       _cpu(runs, *[label for label in runs if label.startswith("alone-engine-")]))]


def per_case_figures(runs: dict[str, Measured], n: int) -> list[Figure]:
    """4: a fresh reference and engine per case vs the harness. The target is judged on the style where
    every engine start is a process start; the one that shares imports in one process is its lower bound."""
    process, shared, harness = _wall(runs, "per-case-process"), _wall(runs, "per-case"), _wall(runs, f"scale-{n}")
    lower = Figure("4 per-case", "per-case, imports shared / harness", None, "x", note="not measured")
    if shared is not None and harness:
        lower = Figure("4 per-case", "per-case, imports shared / harness", shared / harness, "x",
                       note="lower bound: one process, a fresh engine object per case")
    return [Figure("4 per-case", f"harness (--variants base), {n} cases, wall", harness, "s"),
            Figure("4 per-case", f"per-case, a fresh engine process per case, {n} cases, wall", process, "s"),
            _ratio("4 per-case", "per-case / harness", process, harness),
            _cpu_ratio("4 per-case", "per-case / harness", _cpu(runs, "per-case-process"), _cpu(runs, f"scale-{n}")),
            Figure("4 per-case", f"per-case, imports shared, {n} cases, wall", shared, "s"), lower]


def scaling_figures(runs: dict[str, Measured], sizes: list[int]) -> list[Figure]:
    """5: wall and peak memory per size, and the marginal cost per case between sizes."""
    figures: list[Figure] = []
    measured = [(n, runs[f"scale-{n}"]) for n in sizes if f"scale-{n}" in runs and runs[f"scale-{n}"].ok]
    for n, run in measured:
        figures += [Figure("5 scaling", f"{n} cases, wall", run.wall_s, "s"),
                    Figure("5 scaling", f"{n} cases, CPU seconds of the process tree", run.cpu_s, "s"),
                    Figure("5 scaling", f"{n} cases, peak memory of the process tree", run.peak_mb, "MB")]
        if run.peak_by_process_mb:
            name, mb = max(run.peak_by_process_mb.items(), key=lambda item: item[1])
            figures.append(Figure("5 scaling", f"{n} cases, peak of its largest process", mb, "MB",
                                  note=name.partition(" ")[2]))
    marginals = []
    for (n0, r0), (n1, r1) in zip(measured, measured[1:]):
        per_case = (r1.wall_s - r0.wall_s) / (n1 - n0)
        marginals.append(per_case)
        figures.append(Figure("5 scaling", f"marginal cost per case, {n0} -> {n1}", per_case, "s/case"))
        if r0.cpu_s is not None and r1.cpu_s is not None:
            figures.append(Figure("5 scaling", f"marginal CPU per case, {n0} -> {n1}",
                                  (r1.cpu_s - r0.cpu_s) / (n1 - n0), "s/case"))
        if r0.peak_mb is not None and r1.peak_mb is not None:
            figures.append(Figure("5 scaling", f"marginal memory per case, {n0} -> {n1}",
                                  (r1.peak_mb - r0.peak_mb) / (n1 - n0), "MB/case"))
    name = "marginal s/case, last / first step"
    if len(marginals) < 2:
        figures.append(_ratio("5 scaling", name, None, None, "needs three sizes"))
    elif marginals[0] <= 0:
        figures.append(_ratio("5 scaling", name, None, None, "the first step cost nothing measurable: noise "
                                                             "exceeds the per-case cost"))
    else:
        figures.append(_ratio("5 scaling", name, marginals[-1], marginals[0]))
    return figures


def covered(spans: list[tuple[float, float]]) -> float:
    """Seconds covered by at least one of the (start, end) spans: streams that overlap count once."""
    total, reach = 0.0, float("-inf")
    for start, end in sorted(spans):
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total


def stage_figures(runs: dict[str, Measured]) -> list[Figure]:
    """6: where the time goes: imports in fresh interpreters, loading, each engine process, and the
    harness's own stages inside the single-path and matrix runs."""
    figures = [Figure("6 stages", f"import {label.removeprefix('import-')} (fresh interpreter)", m.wall_s, "s")
               for label, m in sorted(runs.items()) if label.startswith("import-") and m.ok]
    if "load" in runs and runs["load"].ok:
        figures += [Figure("6 stages", f"load: {name}", value, "s")
                    for name, value in runs["load"].report["seconds"].items()]
    for role in ("reference", "engine"):
        for m in _alone(runs, role):
            run_s = m.report.get("run_s")
            start = m.report["total_s"] - run_s if run_s is not None else None
            figures += [Figure("6 stages", f"{role} process: spawn, imports, load, start, close", start, "s"),
                        Figure("6 stages", f"{role}: forward/generate (run)", run_s, "s"),
                        Figure("6 stages", f"{role} alone: CPU seconds of its process tree", m.cpu_s, "s")]
    for label in ("single", "matrix"):
        run = runs.get(label)
        if run is None or not run.ok:
            continue
        timers = run.report.get("timers", {})
        for name, seconds in timers.get("seconds", {}).items():
            figures.append(Figure("6 stages", f"{label}: {name} ({timers['calls'][name]} calls)", seconds, "s"))
        for stream in run.report.get("streams", []):
            figures.append(Figure("6 stages", f"{label}: {stream['role']} stream as the run consumed it",
                                  stream.get("total_s"), "s"))
        for name, seconds in (run.report.get("stage_s") or {}).items():
            figures.append(Figure("6 stages", f"{label}: stage_s {name}", seconds, "s"))
        for process, seconds in run.cpu_by_process_s.items():
            if seconds >= 0.5:  # the helpers an engine spawns for a moment are not where time goes
                pid, _, name = process.partition(" ")
                figures.append(Figure("6 stages", f"{label}: CPU of {name}", seconds, "s", note=f"pid {pid}"))
        if label == "single":
            spans = [(s["start_s"], s["end_s"]) for s in run.report.get("streams", []) if "end_s" in s]
            figures.append(Figure("6 stages", "single: while no engine stream runs (start-up, render, report)",
                                  run.wall_s - covered(spans), "s"))
    return figures


def all_figures(runs: dict[str, Measured], parts: list[str], per_case_n: int, sizes: list[int]) -> list[Figure]:
    builders = {"single": lambda: single_figures(runs), "matrix": lambda: matrix_figures(runs),
                "stored": lambda: stored_figures(runs), "paths": lambda: path_figures(runs), "per-case": lambda: per_case_figures(runs, per_case_n),
                "scaling": lambda: scaling_figures(runs, sizes), "stages": lambda: stage_figures(runs)}
    return [f for part in parts for f in builders[part]()]


def table(figures: list[Figure]) -> str:
    """The figures as an aligned text table (pandas), one line per figure."""
    import pandas as pd

    rows = [{"part": f.part, "figure": f.name,
             "value": "-" if f.value is None else f"{f.value:.3g} {f.unit}" if abs(f.value) < 100
             else f"{f.value:.0f} {f.unit}",
             "target": f.target, "ok": "" if f.ok is None else "yes" if f.ok else "NO", "note": f.note}
            for f in figures]
    return pd.DataFrame(rows).to_string(index=False, justify="left")


def bench_json(figures: list[Figure], runs: dict[str, Measured], context: dict[str, Any]) -> dict[str, Any]:
    """Everything the bench measured: the figures, each subprocess's raw measurement, and the context
    (machine, date, options, load average) a reader needs to trust or distrust them."""
    return {"context": context, "figures": [asdict(f) for f in figures],
            "runs": {label: asdict(m) for label, m in runs.items()}}


def write_json(data: dict[str, Any], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, default=str))
    return path
