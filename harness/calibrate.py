"""`vlm-parity calibrate`: how far from its floor a clean engine is, per metric and dtype, and the multiples that
supports; `--record` keeps the clean sample the suite drift test compares every later run with.

A metric passes a cell at `k x floor + atol`; k has to sit above the clean spread of that metric's ratios, which
differs by metric (a mean is tighter than a maximum) and by machine. This reads clean results files (or runs the
clean default suite N times first: on one machine repeated runs are bit-identical, so pool files from several
machines and models), prints each metric's distribution (cells, median, p90, p99, worst and where) and proposes
`k_warn` = 1.4x and `k` = 2.3x the worst clean ratio (its root for a second-order metric), rounded up to a half,
the margins the packaged values were set with; then the thresholds-file entries for the proposals that differ
from what is in force, ready for a user's `--thresholds` file.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from harness import config
from harness.core.files import write_atomic
from harness.core.schema import METRIC_INFO, RunResult
from harness.judging.suite import cell_ratios, round_sig, sample_dtype, summary
from harness.publish.results import RESULTS_NAME, read_results
from harness.run.references import DEFAULT_DIR, clean_sample_path

MARGIN_WARN, MARGIN_FAIL = 1.4, 2.3  # the margins above the worst clean ratio the packaged multiples use


@dataclass
class Clean:
    """One clean results file, read."""

    path: Path
    run: RunResult

    @property
    def dtype(self) -> str:
        p = self.run.provenance
        return config.effective_dtype(p.dtype, p.reference_dtype or p.dtype)

    @property
    def sample_dtype(self) -> str:
        return sample_dtype(self.run.provenance.dtype, self.run.provenance.reference_dtype)

    @property
    def model(self) -> str:
        return self.run.provenance.model_name or self.run.provenance.model


def results_files(paths: Sequence[Path]) -> list[Path]:
    """results.json files: each path a file, a run's folder, or a folder of runs (a zoo's)."""
    found = []
    for path in paths:
        if path.is_file():
            found.append(path)
        elif (path / RESULTS_NAME).is_file():
            found.append(path / RESULTS_NAME)
        else:
            found += sorted(path.glob(f"*/{RESULTS_NAME}"))
    return found


def propose(worst: float, order: int) -> tuple[float, float]:
    """(k_warn, k) above the worst clean ratio, for a metric of this order (its ratios grow as k^order)."""
    root = worst ** (1 / order)
    k_warn = _half_up(MARGIN_WARN * root)
    return k_warn, max(_half_up(MARGIN_FAIL * root), k_warn + 0.5)


def _half_up(value: float) -> float:
    """Up to the next half, at least 1.5: a multiple below that would fail a clean run's ordinary cell."""
    return max(1.5, math.ceil(value * 2) / 2)


def calibration_rows(cleans: Sequence[Clean]) -> list[dict[str, Any]]:
    """Per dtype and metric: the pooled clean distribution, where its worst cell was, and the proposal next to
    the multiples in force (the packaged thresholds)."""
    pooled: dict[tuple[str, str], list[tuple[float, str]]] = {}
    for clean in cleans:
        for metric, values in cell_ratios(clean.run).items():
            pooled.setdefault((clean.dtype, metric), []).extend((v, clean.model) for v in values)
    packaged = config.load_config()
    rows = []
    for (dtype, metric), values in sorted(pooled.items()):
        ratios = [v for v, _ in values]
        worst, where = max(values)
        k_warn, k = propose(worst, METRIC_INFO[metric]["order"])
        th = config.resolve(packaged, dtype)
        rows.append({"dtype": dtype, "metric": metric, **summary(ratios), "worst in": where,
                     "k_warn": k_warn, "k": k, "in force": f"{config.multiple(th, metric, 'k_warn'):g} / "
                                                          f"{config.multiple(th, metric, 'k'):g}"})
    return rows


def proposal_yaml(rows: Sequence[dict[str, Any]], command: str) -> str:
    """Thresholds-file entries for the proposals that differ from what is in force, each with its reason."""
    dtypes: dict[str, dict[str, Any]] = {}
    for row in rows:
        if row["in force"] == f"{row['k_warn']:g} / {row['k']:g}":
            continue
        reason = (f"{command}: worst clean ratio {row['max']:g} in {row['worst in']} over {row['n']} cells; "
                  f"k_warn = {MARGIN_WARN}x, k = {MARGIN_FAIL}x")
        entries = dtypes.setdefault(row["dtype"], {})
        entries[f"{row['metric']}_k"] = {"value": row["k"], "reason": reason}
        entries[f"{row['metric']}_k_warn"] = {"value": row["k_warn"], "reason": reason}
    return yaml.safe_dump({"dtypes": dtypes}, sort_keys=False, width=120) if dtypes else ""


def record_clean(cleans: Sequence[Clean], root: Path, command: str) -> list[Path]:
    """The clean samples, pooled per reference model, engine and dtype, written where the run's suite test reads
    them (`harness.run.references.clean_sample_path`)."""
    groups: dict[Path, list[Clean]] = {}
    for clean in cleans:
        p = clean.run.provenance
        same = p.reference_model in (None, "", p.model)  # the built-in model on both sides: its name keys the store
        reference = (p.model_name if same else None) or p.reference_info.get("model") or p.reference_model
        path = clean_sample_path(root, reference, p.engine, p.device, clean.sample_dtype)
        groups.setdefault(path, []).append(clean)
    for path, members in groups.items():
        ratios: dict[str, list[float]] = {}
        for clean in members:
            for metric, values in cell_ratios(clean.run).items():
                ratios.setdefault(metric, []).extend(round_sig(v) for v in values)
        p = members[0].run.provenance
        doc = {"engine": p.engine, "engine_version": p.engine_version, "model": members[0].model,
               "dtype": members[0].sample_dtype,
               "recorded": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
               "command": command,
               "runs": [{"results": str(c.path), "date": c.run.provenance.date,
                         "cpu": (c.run.provenance.hardware or {}).get("cpu"), "cases": len(c.run.cases),
                         "variants": [v["name"] for v in c.run.variants]} for c in members],
               "ratios": {m: sorted(v) for m, v in ratios.items()}}
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps(doc, indent=1) + "\n")
    return list(groups)


def add_calibrate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("results", type=Path, nargs="*",
                        help="clean results.json files or folders (a zoo folder: every model's); none: --runs")
    parser.add_argument("--runs", type=int, default=0, metavar="N",
                        help="first run the clean default suite N times into --out (repeated runs on one machine are "
                             "bit-identical: pool results from several machines for a spread)")
    parser.add_argument("--out", type=Path, default=Path("reports/calibrate"), help="where --runs writes")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"),
                        help="the dtype of --runs")
    parser.add_argument("--record", action="store_true",
                        help="keep the clean sample beside the stored references (references/<model>/clean/): "
                             "later runs of that model, engine, device and dtype test the whole suite against it")
    parser.add_argument("--references-dir", type=Path, help="stored references root (default: references/)")


def calibrate_command(args: argparse.Namespace) -> int:
    """0 with a table printed, 2 when there is nothing clean to read."""
    import pandas as pd

    from harness.run.options import RunConfig
    from harness.runner import run_command

    paths = list(args.results)
    for i in range(1, args.runs + 1):
        out = args.out / f"run-{i}"
        run_command(RunConfig(cases=[Path("cases")], out=out, dtype=args.dtype))
        paths.append(out)
    files = results_files(paths)
    if not files:
        print("vlm-parity calibrate: no results.json given (pass files or folders, or --runs N)", file=sys.stderr)
        return 2
    cleans = []
    for path in files:
        try:
            run = read_results(path)
        except ValueError as exc:
            print(f"vlm-parity calibrate: {exc}", file=sys.stderr)
            return 2
        if run.status != "complete" or run.verdict != "pass":
            print(f"{path}: skipped: not a clean run (status {run.status}, verdict {run.verdict})")
            continue
        cleans.append(Clean(path, run))
    rows = calibration_rows(cleans)
    if not rows:
        print("vlm-parity calibrate: no cell of these runs has a ratio to its floor", file=sys.stderr)
        return 2
    command = " ".join(["vlm-parity calibrate", *(shlex.quote(str(p)) for p in args.results),
                        *([f"--runs {args.runs} --dtype {args.dtype}"] if args.runs else [])])
    machines = sorted({(c.run.provenance.hardware or {}).get("cpu") or "?" for c in cleans})
    print(f"{len(cleans)} clean runs, {len({c.model for c in cleans})} models, machines: {', '.join(machines)}")
    with pd.option_context("display.width", 160, "display.max_columns", 20):
        print(pd.DataFrame(rows).to_string(index=False))
    snippet = proposal_yaml(rows, command)
    print(f"\nproposed thresholds entries (for a --thresholds file):\n{snippet}" if snippet
          else "\nthe multiples in force are what these runs propose")
    if args.record:
        for path in record_clean(cleans, args.references_dir or DEFAULT_DIR, command):
            print(f"clean sample: {path}")
    return 0
