"""The release gate: a results file and a policy in, pass / fail / cannot decide out.

Exit codes: 0 pass, 1 fail, 2 cannot decide (results missing, malformed or
from a run that did not complete: a gate must never pass on what it could
not read).
"""
from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from harness.explain import case_lines, finding_text
from harness.results import read_results
from harness.schema import METRICS, PASSING, RunResult

PASS, FAIL, UNDECIDED = 0, 1, 2
LABELS = {PASS: "pass", FAIL: "fail", UNDECIDED: "cannot decide"}


@dataclass
class GateDecision:
    code: int
    policy: str
    reasons: list[str]

    @property
    def label(self) -> str:
        return LABELS[self.code]


def load_gate_config(path: Path | None = None) -> dict[str, Any]:
    text = (Path(path).read_text() if path else
            resources.files("harness.config").joinpath("gate.yaml").read_text())
    return yaml.safe_load(text)


def decide(run: RunResult, name: str, policy: dict[str, Any]) -> GateDecision:
    """Apply one policy to a run; every reason names a case or a metric."""
    if run.status != "complete":
        return GateDecision(UNDECIDED, name, [f"run did not complete (status {run.status}): {run.error}"])
    tags = set(policy.get("required_tags") or [])
    required = [c for c in run.cases if (not tags or tags & set(c.tags)) and c.verdict != "skipped"]
    if len(required) < max(policy.get("min_cases", 1), 1):
        return GateDecision(UNDECIDED, name, [f"{len(required)} required case results (tags: "
                                              f"{sorted(tags) or 'any'}), policy needs at least "
                                              f"{max(policy.get('min_cases', 1), 1)}"])
    bounds = policy.get("metrics") or {}
    # `name: x` is an upper bound, `name_min: x` a lower one, on every variant's comparison with the reference.
    needed = list(policy.get("required_metrics") or [])
    unknown = [m for m in [*bounds, *needed] if m.removesuffix("_min") not in METRICS]
    if unknown:
        return GateDecision(UNDECIDED, name, [f"policy names unknown metrics: {', '.join(unknown)}"])
    allowed = {a["case"]: a["reason"] for a in policy.get("allowed_failures") or []}
    reasons, undecided, known = [], [], []
    for case in (c for c in required if c.case_id not in allowed):
        if case.verdict not in PASSING:
            reasons.append(f"{case.case_id}: {case.verdict}: {'; '.join(case_lines(case))}")
        elif case.verdict == "known":
            known.append(f"{case.case_id}: known: {'; '.join(case_lines(case))}")
        for variant in case.variants.values():
            cmp, where = variant.comparison, f"{case.case_id} [{variant.variant}]"
            if policy.get("no_drift"):
                reasons += [f"{where}: drift: {finding_text(f)}" for f in variant.drifting]
            undecided += [f"{where}: policy needs {m}, which is unavailable: {cmp.unavailable[m]}" for m in needed
                          if cmp and m in cmp.unavailable]
            for key, bound in bounds.items() if cmp else ():
                metric = key.removesuffix("_min")
                value = getattr(cmp, metric)
                if metric in cmp.unavailable:
                    undecided.append(f"{where}: policy bounds {metric}, which is unavailable: {cmp.unavailable[metric]}")
                elif value is None:
                    continue
                elif key.endswith("_min") and not value >= bound:
                    reasons.append(f"{where}: {metric} = {value:.3g} < {bound:.3g} (policy bound)")
                elif not key.endswith("_min") and not value <= bound:
                    reasons.append(f"{where}: {metric} = {value:.3g} > {bound:.3g} (policy bound)")
    if undecided:
        return GateDecision(UNDECIDED, name, undecided + reasons + known)
    return GateDecision(FAIL if reasons else PASS, name, reasons + known)


def gate_file(results: Path, policy_name: str, config: dict[str, Any]) -> GateDecision:
    policy = (config.get("policies") or {}).get(policy_name)
    if policy is None:
        known = ", ".join(sorted(config.get("policies") or {}))
        return GateDecision(UNDECIDED, policy_name, [f"no policy named {policy_name!r} (known: {known})"])
    try:
        run = read_results(results)
    except ValueError as exc:
        return GateDecision(UNDECIDED, policy_name, [str(exc)])
    return decide(run, policy_name, policy)
