"""A markdown summary for CI step summaries ($GITHUB_STEP_SUMMARY) and chat."""
from __future__ import annotations

import os

from harness.core.format import fmt, ratio
from harness.core.schema import TABLE_METRICS, CaseComparison, RunResult
from harness.judging.explain import case_lines, run_lines
from harness.publish.attention import attention, case_headline, group_title, headline, known_records
from harness.publish.outcome import Outcome


def _cell(cmp: CaseComparison | None, key: str) -> str:
    """'1.4e-01 (1.7x)': the value and its ratio to the case's floor."""
    if cmp is None:
        return "–"
    if key in cmp.unavailable:
        return "unavailable"
    check = cmp.checks.get(key)
    mark = " ⚠" if check and check.level == "drift" else " ✗" if check and check.level == "fail" else ""
    shown = f" ({ratio(check.ratio)})" if check and check.ratio is not None else ""
    return f"{fmt(getattr(cmp, key))}{shown}{mark}"


def markdown_summary(run: RunResult, gate: tuple[str, list[str]] | None = None,
                     regressions: list[str] | None = None, diagnosis: list[str] | None = None) -> str:
    p = run.provenance
    names = [v["name"] for v in run.variants]
    lines = [
        f"## vlm-parity: {run.verdict.upper()}",
        "",
        f"{p.engine} vs {p.reference_engine} on `{p.model}` ({p.dtype}), variants {', '.join(names)}",
        "",
        f"**{headline(run)}**; {case_headline(run)}",
    ]
    lines += ["", *[f"**Diagnosis:** {d}" for d in diagnosis or []]]
    if run.skipped:
        lines += ["", *[f"- variant `{name}` skipped: {why}" for name, why in run.skipped.items()]]
    if run.error:
        lines += ["", f"**Run error:** {run.error}"]
    if run.notes:
        lines += ["", *[f"- ⚠ {w}" for w in run_lines(run)]]
    if gate:
        lines += ["", f"**Gate:** {gate[0]}" + "".join(f"\n- {r}" for r in gate[1])]
    if regressions:
        lines += ["", "**Regressions against the previous run:**", *[f"- {r}" for r in regressions]]
    lines += ["", *attention_lines(run), *known_lines(run)]
    lines += ["", f"<details><summary>Cases ({len(run.cases)})</summary>", "",
              "Metric cells: value (ratio to the case's floor); ✗ fails, ⚠ drifts."]
    lines += ["", f"| case | {' | '.join(TABLE_METRICS)} | {' | '.join(names)} | verdict | reasons |",
              "|---" * (len(TABLE_METRICS) + len(names) + 3) + "|"]
    for case in sorted(run.cases, key=lambda c: (c.verdict == "pass", c.case_id)):
        cells = [_cell(case.comparison, key) for key in TABLE_METRICS]
        cells += [case.variants[n].verdict if n in case.variants else "–" for n in names]
        reasons = "; ".join(case_lines(case)).replace("|", "\\|")
        lines.append(f"| {case.case_id} | {' | '.join(cells)} | {case.verdict} | {reasons} |")
    lines += ["", "</details>"]
    return "\n".join(lines) + "\n"


def _md(text: str) -> str:
    return text.replace("|", "\\|")


def attention_lines(run: RunResult) -> list[str]:
    """"Needs attention": one row per signature (`harness.publish.attention`), its cells folded."""
    groups = attention(run)
    if not groups:
        return ["**Needs attention:** nothing."]
    cells = sum(len(g.cells) for g in groups)
    lines = [f"**Needs attention ({len(groups)} group{'s' * (len(groups) != 1)}, {cells} cell{'s' * (cells != 1)})**", "",
             "| signature | first finding | cells |", "|---|---|---|"]
    for g in groups:
        cases = ", ".join(g.cases[:8]) + (f", ... ({len(g.cases)})" if len(g.cases) > 8 else "")
        lines.append(f"| {_md(group_title(g))} | {_md(g.line)} | {len(g.cells)} in {len(g.cases)} cases: {cases} |")
    return lines


def known_lines(run: RunResult) -> list[str]:
    """Known failures, folded: one row per record."""
    records = known_records(run)
    if not records:
        return []
    lines = ["", f"<details><summary>Known failures ({sum(r.cells for r in records)} cells in {len(records)} "
                 f"record{'s' * (len(records) != 1)})</summary>", "", "| record | variants | cases | reproduction |", "|---|---|---|---|"]
    for r in records:
        cases = ", ".join(list(r.cases)[:8]) + (", ..." if len(r.cases) > 8 else "")
        lines.append(f"| {_md(r.title)} | {', '.join(r.variants)} | {len(r.cases)}: {cases} | "
                     f"{_md(r.reproduction) or '–'} |")
    return [*lines, "", "</details>"]


def write_step_summary(run: RunResult, outcome: Outcome) -> None:
    """The markdown summary, appended to $GITHUB_STEP_SUMMARY where CI sets it."""
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        with open(summary, "a") as f:
            f.write(markdown_summary(run, (f"{outcome.gate.label} ({outcome.gate.policy})", outcome.gate.reasons),
                                     outcome.regressions, outcome.diagnosis))
