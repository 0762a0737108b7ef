"""A one-line diagnosis per run from the pattern of failures over cases x variants.

Pure function of the results: which variants fail, on which cases, and by
which kind of reason, says where to look before anyone opens a case.
"""
from __future__ import annotations

from collections import Counter

from harness.core.schema import METRIC_INFO, CaseResult, Finding, RunResult
from harness.judging.compare.returned import AFTER_LOGITS, after_logits
from harness.judging.ladder import LABELS

_FAILED = ("fail", "error")


def _decode_only(finding: Finding) -> bool:
    """A failure of the generated tokens, not of the prompt's scoring (or a repeat disagreeing with itself)."""
    section = METRIC_INFO[finding.metric]["section"] if finding.metric in METRIC_INFO else None
    return section in ("decode", "text") or finding.against == "attempt"


def _failing_cells(run: RunResult) -> dict[str, set[str]]:
    """variant -> ids of the cases whose cell on it failed or errored."""
    cells: dict[str, set[str]] = {}
    for case in run.cases:
        for name, cell in case.variants.items():
            if cell.verdict in _FAILED:
                cells.setdefault(name, set()).add(case.case_id)
    return cells


def _after_logits(judged: list[CaseResult]) -> list[str]:
    """The after-the-logits checks the failing cells fail on, when every failing cell fails only on those."""
    per_cell = [after_logits(cell.failing) for c in judged for cell in c.variants.values() if cell.verdict == "fail"]
    return sorted({m for metrics in per_cell for m in metrics}) if per_cell and all(per_cell) else []


def _suite_line(run: RunResult) -> list[str]:
    """The whole engine's drift, when the suite test found one: it comes before any cell's pattern."""
    moved = [s for s in run.suite if s.drifts]
    if not moved:
        return []
    shifts = ", ".join(f"{s.metric} median {s.median:.3g}x its floor (clean {s.clean_median:.3g}x)" for s in moved)
    return [f"the whole engine drifted against its clean sample: {shifts}; a numerical change that reaches every "
            "case (a kernel, weight loading, a dtype path), whether or not any cell fails"]


def diagnose(run: RunResult) -> list[str]:
    """Each pattern the failures match, most specific first (the whole suite's drift first of all); one line
    saying so when nothing failed."""
    cells = _failing_cells(run)
    if not cells:
        known = sum(v.verdict == "known" for c in run.cases for v in c.variants.values())
        ran = {n for c in run.cases for n, v in c.variants.items() if v.verdict != "skipped"}
        return _suite_line(run) + [f"no failures: every variant that ran ({len(ran)}) passes on every case"
                                   + (f"; {known} known failure(s) on record" if known else "")]
    found: list[str] = []
    info = {v["name"]: v for v in run.variants}
    if len(cells) == 1:
        (name,) = cells
        errored = all(run.case(c).variants[name].verdict == "error" for c in cells[name])
        others = [cell.verdict for c in cells[name] for n, cell in run.case(c).variants.items()
                  if n != name and cell.verdict != "skipped"]
        if others and all(v in ("pass", "known") for v in others):
            symptom = info.get(name, {}).get("diagnosis") or f"fails only on the {name} variant"
            found.append(f"{symptom}{' (engine errors)' if errored else ''}: "
                         f"{len(cells[name])} case(s), every other variant passes on them")
    failing = set().union(*cells.values())
    judged = [c for c in run.cases if c.variants]
    image = [c for c in judged if c.images]
    text = [c for c in judged if not c.images]
    if failing and text and all(c.images for c in judged if c.case_id in failing):
        found.append(f"image cases fail ({len(failing)}/{len(image)}), text-only cases pass: the vision path "
                     "(decode, processor, encoder, placeholders)")
    findings = [f for c in judged for cell in c.variants.values() if cell.verdict == "fail" for f in cell.failing]
    if findings and all(f.metric == "prompt_ids_match" for f in findings):
        found.append("prompt token ids differ: the tokenizer or the chat template")
    elif returned := _after_logits(judged):
        found.append(f"the logits agree; what the engine returned after them differs: "
                     f"{', '.join(AFTER_LOGITS[m] for m in returned)} ({', '.join(returned)})")
    elif findings and all(_decode_only(f) for f in findings):
        found.append("prefill passes, decode fails: the prompt is scored right, generation goes wrong")
    firsts = Counter(c.ladder.first for c in judged if c.ladder is not None and c.case_id in failing)
    if firsts:
        stage, count = firsts.most_common(1)[0]
        probed = sum(firsts.values())
        where = f"first difference at the {LABELS[stage]}" if stage else "the probe reproduced no difference"
        found.insert(0, f"{where} in {count} of {probed} probed case(s)")
    if not found:
        found.append(f"fails on variants {', '.join(sorted(cells))}")
    return _suite_line(run) + found
