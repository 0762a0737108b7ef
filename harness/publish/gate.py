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

from harness.config import ceiling_key, fail, key_problem, mapping, read_yaml
from harness.core.schema import METRICS, PASSING, RunResult
from harness.judging.explain import case_lines, finding_text
from harness.judging.suite import drifting, shift_text
from harness.publish.history import check_bands
from harness.publish.results import read_results
from harness.publish.zoo import read_zoo

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


# A policy's fields; `metrics` bounds a metric on every variant (`name: x` from above for a lower-is-better
# metric, `name_min: x` from below for a higher-is-better one), `required_metrics` are metric names.
POLICY_FIELDS = ("description", "min_cases", "no_drift", "no_suite_drift", "required_metrics", "metrics",
                 "allowed_failures", "required_tags")
BOUND_KEYS = tuple(ceiling_key(m) for m in METRICS)


def load_gate_config(path: Path | None = None) -> dict[str, Any]:
    """The packaged gate config, or the file at `path`, checked against the metrics' declaration:
    ConfigError names the file and the key."""
    source = Path(path) if path else resources.files("harness.config").joinpath("gate.yaml")
    config = read_yaml(source)
    check_gate_config(config, str(source))
    return config


def gate_policy(config: dict[str, Any], policy: str) -> dict[str, Any]:
    """The gate config, once `policy` is known to be one of its policies (ValueError naming them if not)."""
    if policy not in config["policies"]:
        raise ValueError(f"no gate policy named {policy!r} (known: {', '.join(sorted(config['policies']))})")
    return config


def check_gate_config(config: Any, source: str) -> None:
    """Every policy field, bounded metric, required metric and regression band names something known."""
    for key in mapping(config, source, ()):
        if key not in ("policies", "regressions"):
            fail(source, (key,), "unknown section (known: policies, regressions)")
    for name, policy in mapping(config.get("policies"), source, ("policies",)).items():
        where = ("policies", name)
        for key in mapping(policy, source, where):
            if key not in POLICY_FIELDS:
                fail(source, (*where, key), f"unknown policy field (known: {', '.join(POLICY_FIELDS)})")
        for key in mapping(policy.get("metrics") or {}, source, (*where, "metrics")):
            problem = key_problem(str(key), BOUND_KEYS)
            if problem:
                fail(source, (*where, "metrics", key), problem)
        for i, metric in enumerate(policy.get("required_metrics") or []):
            problem = key_problem(str(metric), METRICS)
            if problem:
                fail(source, (*where, f"required_metrics[{i}]"), problem)
        for i, allowed in enumerate(policy.get("allowed_failures") or []):
            if not isinstance(allowed, dict) or set(allowed) != {"case", "reason"}:
                fail(source, (*where, f"allowed_failures[{i}]"), f"must be {{case: ..., reason: ...}}, got {allowed!r}")
    check_bands(config.get("regressions") or {}, source)


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
    bounds = policy.get("metrics") or {}  # checked at load (`check_gate_config`), as the required metrics
    needed = list(policy.get("required_metrics") or [])
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
    if policy.get("no_suite_drift"):
        reasons += [f"the whole engine drifted: {shift_text(s)}" for s in drifting(run.suite)]
    if undecided:
        return GateDecision(UNDECIDED, name, undecided + reasons + known)
    return GateDecision(FAIL if reasons else PASS, name, reasons + known)


def gate_file(results: Path, policy_name: str, config: dict[str, Any]) -> GateDecision:
    """The decision on a results file or folder; on a zoo folder (`vlm-parity run --model all`), one decision
    over every model: the worst, with each reason naming its model."""
    policy = (config.get("policies") or {}).get(policy_name)
    if policy is None:
        known = ", ".join(sorted(config.get("policies") or {}))
        return GateDecision(UNDECIDED, policy_name, [f"no policy named {policy_name!r} (known: {known})"])
    zoo = read_zoo(results) if Path(results).is_dir() else None
    if zoo is not None:
        rows, planned = zoo
        missing = [name for name in planned if name not in {row.model for row in rows}]
        if missing or not rows:  # a zoo stopped half way is no release decision over every model
            return GateDecision(UNDECIDED, policy_name, [f"{results}: the zoo did not run {', '.join(missing)}"
                                                         if missing else f"{results}: the zoo ran no model"])
        decisions = [(row.model, _gate_one(Path(results) / row.folder, policy_name, policy)) for row in rows]
        return GateDecision(max(d.code for _, d in decisions), policy_name,
                            [f"{model}: {reason}" for model, d in decisions for reason in d.reasons])
    return _gate_one(results, policy_name, policy)


def _gate_one(results: Path, policy_name: str, policy: dict[str, Any]) -> GateDecision:
    try:
        run = read_results(results)
    except ValueError as exc:
        return GateDecision(UNDECIDED, policy_name, [str(exc)])
    return decide(run, policy_name, policy)
