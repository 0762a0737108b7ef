"""A markdown summary for CI step summaries ($GITHUB_STEP_SUMMARY) and chat."""
from __future__ import annotations

from harness.report.format import fmt
from harness.schema import CaseComparison, RunResult

COLUMNS = ("prefill_max", "prefill_mean", "decode_max", "rouge_l")


def _cell(cmp: CaseComparison | None, key: str) -> str:
    if cmp is None:
        return "–"
    return "unavailable" if key in cmp.unavailable else fmt(getattr(cmp, key))


def markdown_summary(run: RunResult, gate: tuple[str, list[str]] | None = None,
                     regressions: list[str] | None = None, diagnosis: list[str] | None = None) -> str:
    counts = run.counts()
    p = run.provenance
    names = [v["name"] for v in run.variants]
    lines = [
        f"## vlm-parity: {run.verdict.upper()}",
        "",
        f"{p.get('engine')} vs {p.get('reference_engine')} on `{p.get('model')}` ({p.get('dtype')}), "
        f"variants {', '.join(names)}: {counts['pass']} pass, {counts['known']} known, {counts['fail']} fail, "
        f"{counts['error']} error"
        + (f", {counts['skipped']} skipped" if counts["skipped"] else ""),
    ]
    lines += ["", *[f"**Diagnosis:** {d}" for d in diagnosis or []]]
    if run.skipped:
        lines += ["", *[f"- variant `{name}` skipped: {why}" for name, why in run.skipped.items()]]
    if run.error:
        lines += ["", f"**Run error:** {run.error}"]
    if gate:
        lines += ["", f"**Gate:** {gate[0]}" + "".join(f"\n- {r}" for r in gate[1])]
    if regressions:
        lines += ["", "**Regressions against the previous run:**", *[f"- {r}" for r in regressions]]
    lines += ["", f"| case | {' | '.join(COLUMNS)} | {' | '.join(names)} | verdict | reasons |",
              "|---" * (len(COLUMNS) + len(names) + 3) + "|"]
    for case in sorted(run.cases, key=lambda c: (c.verdict == "pass", c.case_id)):
        cells = [_cell(case.comparison, key) for key in COLUMNS]
        cells += [case.variants[n].verdict if n in case.variants else "–" for n in names]
        reasons = "; ".join(case.reasons).replace("|", "\\|")
        lines.append(f"| {case.case_id} | {' | '.join(cells)} | {case.verdict} | {reasons} |")
    return "\n".join(lines) + "\n"
