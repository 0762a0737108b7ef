"""results.json: written atomically after every case (through `ResultsSink`), read back with clear errors.

Rewriting the whole file per case keeps one self-describing file that is
valid at every moment: a run killed half-way leaves every finished case.
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.schema import CaseResult, RunResult

RESULTS_NAME = "results.json"


def json_safe(value: Any) -> Any:
    """Non-finite floats become null: JSON has no inf or NaN, and jq and browsers reject
    Python's `Infinity`. The verdict has already recorded them as a failure."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def write_results(run: RunResult, out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / RESULTS_NAME
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(json_safe(run.to_dict()), allow_nan=False))
    os.replace(tmp, path)
    return path


class ResultsSink:
    """Where a run's results go as cases complete: the only writer of a run's results file."""

    def __init__(self, run: RunResult, out_dir: Path, progress: Callable[[str], None]) -> None:
        self.run, self.out_dir, self.progress = run, out_dir, progress

    def add(self, result: CaseResult) -> None:
        self.run.cases.append(result)
        self.write()
        line = f"{result.verdict.upper():5} {result.case_id}"
        self.progress(line + (f"  ({'; '.join(result.reasons)})" if result.reasons else ""))

    def write(self) -> Path:
        return write_results(self.run, self.out_dir)


def read_results(path: Path) -> RunResult:
    """Load a results file; ValueError names the file and what is wrong with it."""
    path = Path(path)
    if path.is_dir():
        path = path / RESULTS_NAME
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise ValueError(f"{path}: cannot read results: {exc.strerror}") from exc
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON: {exc}") from exc
    try:
        return RunResult.from_dict(data)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path}: malformed results: {exc}") from exc
