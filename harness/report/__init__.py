"""Everything a run publishes, rendered from its RunResult alone (no engine needed):
index.html, cases.parquet / cases.csv, the CI step summary, and the history line."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from harness.gate import GateDecision, decide, load_gate_config
from harness.history import append_history, load_history, regressions, summarize_run
from harness.report.diagnosis import diagnose
from harness.report.html import render_html
from harness.report.summary import markdown_summary
from harness.report.table import write_tables
from harness.schema import RunResult

__all__ = ["Published", "publish"]


@dataclass
class Published:
    html: Path
    tables: list[Path]
    gate: GateDecision
    regressions: list[str] = field(default_factory=list)
    diagnosis: list[str] = field(default_factory=list)


def publish(run: RunResult, out_dir: Path, history_file: Path | None = None, policy: str = "default",
            gate_config: Path | None = None) -> Published:
    """Write every output of a run into `out_dir`; append to the history if one is given.

    Regressions are judged against the last history entry for the same engine
    and dtype, before this run is appended. Only complete runs of the whole
    suite are appended: a crashed or `--case`-filtered run is no baseline.
    """
    config = load_gate_config(gate_config)
    if policy not in config["policies"]:
        raise ValueError(f"no gate policy named {policy!r} (known: {', '.join(sorted(config['policies']))})")
    gate = decide(run, policy, config["policies"][policy])
    found: list[str] = []
    history = []
    if history_file is not None:
        history = load_history(history_file)
        entry = summarize_run(run)
        same = [h for h in history if (h.get("engine"), h.get("dtype")) == (entry["engine"], entry["dtype"])]
        if same:
            found = regressions(same[-1], entry, config["regressions"])
        if run.status == "complete" and not run.provenance.get("partial"):
            append_history(history_file, entry)
        history = [*same, entry]
    out_dir.mkdir(parents=True, exist_ok=True)
    diagnosis = diagnose(run)
    html = render_html(run, out_dir, gate=gate, regressions=found, history=history, diagnosis=diagnosis)
    tables = write_tables(run, out_dir)
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        with open(summary, "a") as f:
            f.write(markdown_summary(run, (f"{gate.label} ({gate.policy})", gate.reasons), found, diagnosis))
    return Published(html, tables, gate, found, diagnosis)
