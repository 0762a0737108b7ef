"""What a finished run means beyond its cases: the release gate's decision, regressions against the
nightly history (appended to it) and the one-line diagnosis. The CLI and the pytest plugin call
`conclude` after a run; the report and the step summary render the outcome (`harness.publish.report`)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.core.schema import RunResult
from harness.judging.diagnosis import diagnose
from harness.publish.gate import GateDecision, decide, gate_policy, load_gate_config
from harness.publish.history import append_history, load_history, mark_new_known, regressions, summarize_run


@dataclass
class Outcome:
    gate: GateDecision
    regressions: list[str] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)  # this engine's, dtype's and model's runs, this one last
    diagnosis: list[str] = field(default_factory=list)


def conclude(run: RunResult, history_file: Path | None = None, policy: str = "default",
             gate: dict[str, Any] | None = None) -> Outcome:
    """Gate the run by `policy` of the loaded gate config (`harness.publish.gate.load_gate_config`; default: the
    packaged one) and, with a history file, judge regressions against the last entry for the same engine,
    dtype and model (a zoo's history holds every model), and mark known cells new since it, before appending
    this run. Only complete runs of the whole suite are appended: a crashed or `--case`-filtered run is no
    baseline. ValueError for an unknown gate policy."""
    config = gate_policy(gate or load_gate_config(), policy)
    outcome = Outcome(decide(run, policy, config["policies"][policy]), diagnosis=diagnose(run))
    if history_file is not None:
        entry = summarize_run(run)
        key = ("engine", "dtype", "model")
        same = [h for h in load_history(history_file) if all(h.get(k) == entry[k] for k in key)]
        if same:
            outcome.regressions = regressions(same[-1], entry, config["regressions"])
            mark_new_known(run, same[-1])
        if run.status == "complete" and not run.provenance.partial:
            append_history(history_file, entry, run)
        outcome.history = [*same, entry]
    return outcome
