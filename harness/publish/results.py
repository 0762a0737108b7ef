"""A run's results on disk: `results.jsonl` appended as cases complete, `results.json` at the end, and each
case's per-position data in the columnar store beside them (`harness.publish.positions`: OUT/positions/).

Nothing computed is lost: each completed case's per-position rows are written to their own Parquet file, then
its summaries are one line appended to results.jsonl, flushed and fsync'd before the run moves on, so a run
killed at case 900 (even by SIGKILL) leaves 899 readable results. Appending keeps the cost per case constant;
rewriting one JSON document per case would be quadratic in the number of cases. The lines:

    {"record": "run", "run": {provenance, variants, skipped, notes, status, error, schema_version}}
    {"record": "case", "case": {one CaseResult}}          one per completed case
    {"record": "run", "run": {...}}                        again at the end, with the final status

The last "run" record wins, and so does the last line of a case id.
results.json (the whole RunResult, one document) is written atomically when
the run ends, spliced from the lines written (read back from the log, never held in memory), and the log is
then removed: a finished run is results.json, a stopped one results.jsonl, never the same data twice.
`read_results` reads either; a log whose last run record still says "running" is a run that was stopped before
it ended, returned with status "partial". Cases are written without their fields at defaults
(`harness.core.schema.to_dict`).
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from harness.core.files import write_atomic
from harness.core.schema import CaseResult, RunResult, to_dict
from harness.publish.positions import PositionStore, strip

RESULTS_NAME = "results.json"
LOG_NAME = "results.jsonl"
PARTIAL = "partial"


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


def _dumps(value: Any) -> str:
    return json.dumps(json_safe(value), allow_nan=False, separators=(",", ":"))


def _run_json(run: RunResult) -> str:
    """The run without its cases, as one JSON object."""
    fields = replace(run, cases=[]).to_dict()
    del fields["cases"]
    return _dumps(fields)


def _document(run_json: str, case_jsons: Iterable[str]) -> Iterator[str]:
    """results.json spliced from already serialized parts, as chunks: no second serialization of every case,
    and never the whole document in memory."""
    yield f'{run_json[:-1]},"cases":['
    for i, body in enumerate(case_jsons):
        yield ("," if i else "") + body
    yield "]}"


def write_results(run: RunResult, out_dir: Path) -> Path:
    """A finished run's results.json (merged shards, or a run the history added to), atomically; its cases'
    per-position data must already be in `out_dir`'s store."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = write_atomic(out_dir / RESULTS_NAME, _document(_run_json(run), (_dumps(to_dict(c)) for c in run.cases)))
    (out_dir / LOG_NAME).unlink(missing_ok=True)
    return path


def _opening(record: str) -> str:
    """What comes before a record's body on its line."""
    return f'{{"record": "{record}", "{record}": '


def _line(record: str, body: str) -> str:
    return f"{_opening(record)}{body}}}\n"


class ResultsSink:
    """Where a run's results go as cases complete: the only writer of a run's results files.

    The first `add` or `write` starts a fresh log (and removes a results.json
    and per-position files left by an earlier run in the same folder, which would otherwise be read
    instead); `add` writes one case's per-position data to the store and appends its summaries; `write`
    appends the run record, and once the run has a final status writes results.json from the log and removes
    the log. The run keeps each case without its per-position data: a run's memory does not grow with them.
    """

    def __init__(self, run: RunResult, out_dir: Path) -> None:
        self.run, self.out_dir = run, out_dir
        self.log = out_dir / LOG_NAME
        self.store = PositionStore(out_dir)
        self.started = False
        self.written: dict[str, tuple[int, int]] = {}  # case id -> (offset, length) of its last line's JSON

    def add(self, result: CaseResult) -> CaseResult:
        """Write a completed case; the case as the run keeps it (its per-position data in the store)."""
        if not self.started:
            self._start(_run_json(self.run))
        slim = self.store.write(result)
        self.run.cases.append(slim)
        self._case(slim)
        return slim

    def update(self, result: CaseResult) -> None:
        """A case already written, with more to say (its stage ladder): its new line wins (its per-position data
        is in the store already, so a case read back from it may be passed)."""
        slim = strip(result)
        self.run.cases = [slim if c.case_id == slim.case_id else c for c in self.run.cases]
        self._case(slim)

    def write(self) -> Path:
        head = _run_json(self.run)
        if self.started:
            self._append(_line("run", head))
        else:
            self._start(head)
        if self.run.status == "running":
            return self.log
        path = write_atomic(self.out_dir / RESULTS_NAME, _document(head, self._bodies()))
        self.log.unlink()
        return path

    def _case(self, result: CaseResult) -> None:
        body = _dumps(to_dict(result))
        offset = self._append(_line("case", body))
        start = offset + len(_opening("case").encode())
        self.written[result.case_id] = (start, len(body.encode()))

    def _bodies(self) -> Iterable[str]:
        """Each case's last line, in the order cases were first written, read back from the log."""
        with open(self.log, "rb") as f:
            for start, length in self.written.values():
                f.seek(start)
                yield f.read(length).decode()

    def _start(self, head: str) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        (self.out_dir / RESULTS_NAME).unlink(missing_ok=True)
        self.store.clear()
        write_atomic(self.log, _line("run", head))
        _fsync_dir(self.out_dir)  # the new file's directory entry survives a crash too
        self.started = True

    def _append(self, line: str) -> int:
        """Append one line; its offset in the log."""
        if not self.started:
            self._start(_run_json(self.run))
        with open(self.log, "ab") as f:
            offset = f.tell()
            f.write(line.encode())
            f.flush()
            os.fsync(f.fileno())
        return offset


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_results(path: Path) -> RunResult:
    """Load a run from results.json, results.jsonl or their folder; ValueError names the file and what
    is wrong with it. A folder's results.json is read when present (the run ended), else its log; a
    results.json that is missing beside a log (a run that was stopped) is read from the log."""
    path = Path(path)
    if path.is_dir():
        path = path / RESULTS_NAME
    if not path.exists() and path.name == RESULTS_NAME and path.with_name(LOG_NAME).exists():
        path = path.with_name(LOG_NAME)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"{path}: cannot read results: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 text: {exc}") from exc
    data = _from_log(path, text) if path.suffix == ".jsonl" else _from_document(path, text)
    try:
        run = RunResult.from_dict(data)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path}: malformed results: {exc}") from exc
    if run.status == "running":  # no final run record: killed, or crashed below Python
        run.status = PARTIAL
        run.error = run.error or (f"the run stopped before it ended (killed or crashed); "
                                  f"{len(run.cases)} case result(s) were written before it stopped")
    return run


def _from_document(path: Path, text: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{path}: malformed results: a JSON object was expected")
    return data


def _from_log(path: Path, text: str) -> dict[str, Any]:
    """The run record and case lines folded into one results document. Only the very last line may be
    cut short (the process died while appending it): it is dropped; damage anywhere else is an error."""
    lines = text.split("\n")
    run: dict[str, Any] | None = None
    cases: dict[str, dict[str, Any]] = {}  # by case id: a repeated id keeps its place and takes the last value
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            kind = record.get("record")
            if kind == "run":
                run = dict(record["run"])
            elif kind == "case":
                cases[str(record["case"]["case_id"])] = record["case"]
            else:
                raise ValueError(f"unknown record {kind!r}")
        except json.JSONDecodeError as exc:
            if number == len(lines):  # no newline after it: the write that was cut off
                break
            raise ValueError(f"{path}: line {number}: not valid JSON: {exc}") from exc
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{path}: line {number}: not a results record: {exc}") from exc
    if run is None:
        raise ValueError(f"{path}: no run record: not a vlm-parity results log")
    return {**run, "cases": list(cases.values())}
