"""A markdown summary for CI step summaries ($GITHUB_STEP_SUMMARY) and chat."""
from __future__ import annotations

from harness.report.format import fmt
from harness.schema import RunResult


def markdown_summary(run: RunResult, gate: tuple[str, list[str]] | None = None,
                     regressions: list[str] | None = None) -> str:
    counts = run.counts()
    p = run.provenance
    lines = [
        f"## vlm-parity: {run.verdict.upper()}",
        "",
        f"{p.get('engine')} vs {p.get('reference_engine')} on `{p.get('model')}` ({p.get('dtype')}): "
        f"{counts['pass']} pass, {counts['fail']} fail, {counts['error']} error",
    ]
    if run.error:
        lines += ["", f"**Run error:** {run.error}"]
    if gate:
        lines += ["", f"**Gate:** {gate[0]}" + "".join(f"\n- {r}" for r in gate[1])]
    if regressions:
        lines += ["", "**Regressions against the previous run:**", *[f"- {r}" for r in regressions]]
    lines += ["", "| case | verdict | prefill max | prefill mean | decode max | ROUGE-L | reasons |",
              "|---|---|---|---|---|---|---|"]
    for case in sorted(run.cases, key=lambda c: (c.verdict == "pass", c.case_id)):
        c = case.comparison
        cells = [fmt(c.prefill_max), fmt(c.prefill_mean), fmt(c.decode_max), fmt(c.rouge_l)] if c else ["–"] * 4
        reasons = "; ".join(case.reasons).replace("|", "\\|")
        lines.append(f"| {case.case_id} | {case.verdict} | {' | '.join(cells)} | {reasons} |")
    return "\n".join(lines) + "\n"
