"""Findings, notes, ladders and verdicts rendered as text for people.

Results hold findings and notes as data (`harness.core.schema.Finding`, `harness.core.schema.Note`); a note's
words are declared with its kind (`harness.core.notes.NOTES`, rendered by `note_text`), a finding's here. The
CLI, the report, the step summary, the gate and pytest's failure messages all call these, so a reason reads
the same everywhere.
"""
from __future__ import annotations

from harness.core.format import against_floor, fmt
from harness.core.notes import error_notes, note_text
from harness.core.schema import CaseResult, Finding, Ladder, Rung, RunResult, VariantResult
from harness.engines.capture import CAPTURED
from harness.judging.ladder import LABELS

FAILED = ("fail", "error", "known")


def where(f: Finding) -> str:
    """What the output was compared with: 'vs reference', 'vs base', 'attempt 2 vs attempt 1'."""
    if f.against == "child":  # n > 1: the request's answer number attempt + 1, held to the reference
        return f"answer {f.attempt + 1} of n vs reference"
    if f.against == "scored":  # a sampled answer's tokens, scored by the reference (answers: repeats, then n - 1)
        return f"answer {f.attempt + 1} scored by the reference"
    against = "attempt 1" if f.against == "attempt" else f.against
    return f"attempt {f.attempt + 1} vs {against}" if f.attempt else f"vs {against}"


def finding_text(f: Finding) -> str:
    """'vs reference: prefill_max = 4.8 > 3.4e-5 (k x floor + atol; 7.1e5x floor 6.7e-6)'."""
    if f.rule == "structural":
        body = f"{f.metric}: {f.detail}" if f.metric != "prompt_ids_match" else f"prompt_ids_match = false: {f.detail}"
    elif f.rule in ("exact", "topk"):
        body = f"{f.metric} {f.detail}"
    elif f.level == "drift":
        body = f"{f.metric} = {fmt(f.value)} drifts: {against_floor(f.ratio, f.floor)} (fails beyond {fmt(f.bound)})"
    else:
        lower = f.bound is None or f.value is None or f.value > f.bound or f.value != f.value
        op = ">" if lower else "<"
        if f.rule == "floor":
            rule = f"{f.k:g} x floor + atol; {against_floor(f.ratio, f.floor)}"
        elif f.rule == "ceiling":
            rule = f"ceiling; {against_floor(f.ratio, f.floor)}"
        else:
            rule = f.rule
        body = f"{f.metric} = {fmt(f.value)} {op} {fmt(f.bound)} ({rule})"
    return f"{where(f)}: {body}"


def variant_lines(variant: VariantResult) -> list[str]:
    """Why a variant did not pass: the known failure it matches, its errors, why it was skipped, then its
    failures, then where inside the model it first differs (when probed)."""
    why = [n for n in variant.notes if n.kind == "known_failure"] + error_notes(variant.notes)
    where = [f"where: {ladder_text(variant.ladder, variant.verdict == 'fail')}"] if variant.ladder else []
    return [*map(note_text, why), *variant.reasons, *(finding_text(f) for f in variant.failing), *where]


def case_lines(case: CaseResult) -> list[str]:
    """Why a case did not pass: its own reasons and errors, then each failing, erroring or known variant's,
    named."""
    lines = [*case.reasons, *map(note_text, error_notes(case.notes))]
    for name, variant in case.variants.items():
        if variant.verdict in FAILED:
            lines += [f"{name}: {line}" for line in variant_lines(variant)]
    return lines


def warning_lines(case: CaseResult) -> list[str]:
    """What makes a case's verdict less telling than it looks: its own warnings (a stale stored reference, a
    reference check), then each variant's, named (a path it did not exercise)."""
    lines = [note_text(n) for n in case.notes if n.level == "warning"]
    return lines + [f"{name}: {note_text(n)}" for name, variant in case.variants.items()
                    for n in variant.notes if n.level == "warning"]


def info_lines(variant: VariantResult) -> list[str]:
    """What a variant was compared with, or not, and where a native-form difference starts."""
    return [note_text(n) for n in variant.notes if n.level == "info" and n.kind != "known_failure"]


def run_lines(run: RunResult) -> list[str]:
    """What makes the whole run less telling than it looks."""
    return [note_text(n) for n in run.notes]


def drift_lines(case: CaseResult) -> list[str]:
    """The case's drifting metrics, per variant (warnings: within the bound, above k_warn x floor)."""
    return [f"{name}: {finding_text(f)}" for name, variant in case.variants.items() for f in variant.drifting]


def lines(result: CaseResult | VariantResult) -> list[str]:
    """Why a case or one of its variants did not pass (pytest's failure message)."""
    return case_lines(result) if isinstance(result, CaseResult) else variant_lines(result)


def rung_text(rung: Rung) -> str:
    """'image features after the projector: max |diff| 0.41 > 0.0022 (floor 0.00026); image 2 of 2, rows 0-15
    of 16'."""

    parts = [LABELS.get(rung.stage, rung.stage)]
    if rung.status == "unavailable" or rung.status == "not-compared":
        return f"{parts[0]}: {rung.status} ({rung.reason})" if rung.reason else f"{parts[0]}: {rung.status}"
    if rung.error is not None and rung.bound is not None:
        op = ">" if rung.status == "differs" else "<="
        floor = f"floor {fmt(rung.floor)}" if rung.floor is not None else "no floor"
        parts.append(f"max |diff| {fmt(rung.error)} {op} {fmt(rung.bound)} ({floor})")
    elif rung.status == "differs":
        parts.append("differs")
    if rung.where:
        parts.append(rung.where)
    return ": ".join(parts[:2]) + ("; " + "; ".join(parts[2:]) if len(parts) > 2 else "")


def ladder_text(ladder: Ladder, failed: bool = True) -> str:
    """The ladder in one line: the first stage that differs and where, or why there is none (for a variant
    that failed in the run: the probe, computing the request alone and fresh, did not reproduce it)."""
    inside = [r for r in ladder.rungs if r.stage in CAPTURED]
    if ladder.first is None:
        if inside and all(r.status == "unavailable" for r in inside):
            return f"not localized inside the model: {inside[0].reason}"
        compared = sum(r.status == "pass" for r in ladder.rungs)
        if not failed:
            return f"no stage differs ({compared} compared)"
        return (f"the probe agrees at every stage it compared ({compared}): the difference needs the run's own "
                "state (its batch, cache or repeats)")
    rung = next(r for r in ladder.rungs if r.stage == ladder.first)
    return f"first difference: {rung_text(rung)}"
