"""Everything a run publishes, rendered from its RunResult and its outcome alone (no engine needed):
index.html and cases.parquet / cases.csv. Deciding the gate and the history is `harness.publish.outcome`'s."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from harness.core.schema import RunResult
from harness.publish.outcome import Outcome, conclude
from harness.publish.positions import PositionStore
from harness.publish.report.html import render_html
from harness.publish.report.table import write_tables

__all__ = ["Published", "publish"]


@dataclass
class Published:
    html: Path
    tables: list[Path]


def publish(run: RunResult, out_dir: Path, outcome: Outcome | None = None, repro_root: Path | None = None,
            results_dir: Path | None = None, detail: Sequence[str] = ("auto",)) -> Published:
    """Render the run into `out_dir`; without an outcome, the default gate policy's and no history. Cells with
    a reproduction folder under `repro_root` (default: OUT/repro) link to it; per-position data is read from
    the store in `results_dir` (default: `out_dir`) for the cases `detail` picks (`html.detailed`)."""
    outcome = outcome or conclude(run)
    out_dir.mkdir(parents=True, exist_ok=True)
    html = render_html(run, out_dir, gate=outcome.gate, regressions=outcome.regressions, history=outcome.history,
                       diagnosis=outcome.diagnosis, repro_root=repro_root,
                       store=PositionStore(results_dir or out_dir), detail=detail)
    return Published(html, write_tables(run, out_dir))
