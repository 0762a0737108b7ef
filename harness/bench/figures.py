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
  scale-run-<n>       the scale part's run: n synthetic cases x 12 paths (probe `scale`)
  scale-report-<n>    `vlm-parity report` on it; scale-merge-<n>: `merge` of it cut into 8 shards;
  scale-gate-<n>      `gate` on it (probe `cli`)
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
# The scale part's targets at its largest size (issue 30: 1,000 cases x 12 paths x 1,500 positions, 2 cores).
SCALE_TARGETS = {"harness work (run's CPU in its own thread) + report": ("s", 300.0),
                 "peak memory, run": ("MB", 2048.0), "peak memory, report": ("MB", 2048.0),
                 "peak memory, merge of 8 shards": ("MB", 2048.0), "results.json": ("MB", 50.0),
                 "index.html": ("MB", 30.0), "first paint of index.html": ("s", 5.0)}


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


def scale_figures(runs: dict[str, Measured], sizes: list[int]) -> list[Figure]:
    """7: the harness at an engine team's size: per size its work per position, what it wrote, the peak memory
    of the run, the report, the merge and the gate, the report's first paint; the targets at the largest size;
    and the cost per position from size to size (linear: about constant)."""
    figures: list[Figure] = []
    per_position: list[tuple[int, float]] = []
    work: list[tuple[int, int, float]] = []  # (cases, positions, harness seconds of the run)
    for n in sizes:
        run = runs.get(f"scale-run-{n}")
        if run is None or not run.ok:
            figures.append(Figure("7 scale", f"{n} cases", None, "", note="not measured"))
            continue
        r, part = run.report, "7 scale"
        report, merge, gate = (runs.get(f"scale-{k}-{n}") for k in ("report", "merge", "gate"))
        harness = r["harness_cpu_s"] + (report.wall_s if report and report.ok else 0.0)
        per_position.append((n, r["harness_cpu_s"] / max(r["positions"], 1)))
        work.append((n, r["positions"], r["harness_cpu_s"]))
        paint = r.get("paint", {})
        values = {"harness work (run's CPU in its own thread) + report": harness, "peak memory, run": run.peak_mb,
                  "peak memory, report": report.peak_mb if report and report.ok else None,
                  "peak memory, merge of 8 shards": merge.peak_mb if merge and merge.ok else None,
                  "results.json": r["results_mb"], "index.html": r["html_mb"],
                  "first paint of index.html": paint.get("first_paint_s")}
        last = n == max(sizes)
        figures += [Figure(part, f"{n} cases: {r['cells']} cells, {r['positions']} compared positions", r["run_s"],
                           "s", note=f"run wall; the synthetic engines' threads {r['synthetic_s']:.0f} s"),
                    Figure(part, f"{n} cases: harness time per position (the run's CPU in its own thread)",
                           per_position[-1][1] * 1e6, "us")]
        for name, value in values.items():
            unit, bound = SCALE_TARGETS[name]
            ok = None if value is None or not last else value <= bound
            note = paint.get("error", "") if name.startswith("first paint") and value is None else ""
            figures.append(Figure(part, f"{n} cases: {name}", value, unit, f"<= {bound:g}" if last else "", ok, note))
        figures += [Figure(part, f"{n} cases: per-position store", r["store_mb"], "MB"),
                    Figure(part, f"{n} cases: report wall", report.wall_s if report and report.ok else None, "s"),
                    Figure(part, f"{n} cases: merge of 8 shards, wall", merge.wall_s if merge and merge.ok else None,
                           "s"),
                    Figure(part, f"{n} cases: gate wall, peak", gate.wall_s if gate and gate.ok else None, "s",
                           note=f"peak {gate.peak_mb:.0f} MB" if gate and gate.ok and gate.peak_mb else "")]
    marginal = [(n1, (h1 - h0) / (p1 - p0)) for (n0, p0, h0), (n1, p1, h1) in zip(work, work[1:]) if p1 > p0]
    figures += [Figure("7 scale", f"marginal harness time per position, up to {n} cases", m * 1e6, "us")
                for n, m in marginal]
    if len(marginal) >= 2 and marginal[0][1] > 0:
        figures.append(Figure("7 scale", "marginal per position, last / first step", marginal[-1][1] / marginal[0][1],
                              "x", note="linear: about 1 (start-up is the same at every size)"))
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


def all_figures(runs: dict[str, Measured], parts: list[str], per_case_n: int, sizes: list[int],
                scale_sizes: list[int] | None = None) -> list[Figure]:
    builders = {"single": lambda: single_figures(runs), "matrix": lambda: matrix_figures(runs),
                "stored": lambda: stored_figures(runs), "paths": lambda: path_figures(runs),
                "per-case": lambda: per_case_figures(runs, per_case_n), "scaling": lambda: scaling_figures(runs, sizes),
                "stages": lambda: stage_figures(runs), "scale": lambda: scale_figures(runs, scale_sizes or [])}
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
