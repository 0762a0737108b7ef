"""Findings, notes and verdicts rendered as text: the one place a record becomes a sentence.

Results hold findings and notes as data (`harness.schema.Finding`, `harness.schema.Note`); every kind of
note is declared here once (`NOTES`: its level and its text), made with `note`, and rendered with
`note_text`. The CLI, the report, the step summary, the gate and pytest's failure messages all call
these, so a reason reads the same everywhere.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from harness.format import against_floor, fmt
from harness.localize.ladder import CAPTURED, LABELS
from harness.schema import CaseResult, Finding, Ladder, Note, Rung, RunResult, VariantResult

FAILED = ("fail", "error", "known")


@dataclass(frozen=True)
class NoteKind:
    """One kind of note: its level (`harness.schema.NOTE_LEVELS`) and its text, a format string over the
    note's data or a function of it."""

    level: str
    text: str | Callable[[Mapping[str, Any]], str]


def _error(d: Mapping[str, Any]) -> str:
    """'ValueError: bad value', or the message alone where the engine's text named no exception."""
    return f"{d['type']}: {d['message']}" if d.get("type") else d["message"]


def _stored(d: Mapping[str, Any]) -> str:
    """Why a stored reference cannot be used: missing, or stale (in which file, and what changed)."""
    if d["state"] == "missing":
        return "missing: no stored reference for this case (record it with `vlm-parity record`)"
    where = f" ({d['file']})" if d.get("file") else ""
    return f"stale{where}: changed: {'; '.join(d['changes'])}"


def _known(d: Mapping[str, Any]) -> str:
    return d["reason"] + (f" (reproduction: {d['reproduction']})" if d.get("reproduction") else "")


_NATIVE = {
    "template": "prompt token ids differ: the engine's own chat template (or tokenizer) renders the prompt "
                "differently from the reference's",
    "decoding": "prompt token ids agree but logprobs differ: the engine's own image decoding (pixels) or what "
                "follows it",
    "after_rendering": "prompt token ids agree; the difference is after rendering",
}

NOTES: dict[str, NoteKind] = {
    # The run's (`RunResult.notes`): what makes the whole run less telling than it looks.
    "no_floor": NoteKind("warning", "no floors: {reason}; every metric is judged by its absolute ceiling alone"),
    "chunking_split_nothing": NoteKind(
        "warning", "variant {variant}: prefill chunks of {chunk_tokens} tokens split no image span: the variant "
                   "does not exercise its path on these cases"),
    "reference_model_not_local": NoteKind(
        "warning", "reference model {model} is not on this machine: the stored references' weights hash was not "
                   "checked against it (their processor files are taken as recorded)"),
    "references_missing": NoteKind("warning", lambda d: (
        f"{d['count']} cases have no stored reference in {d['dir']} and ran the live reference "
        f"({', '.join(d['cases'])}{', ...' if d['count'] > len(d['cases']) else ''}): `vlm-parity record` "
        "stores them")),
    "unsupported_base_features": NoteKind("warning", lambda d: (
        f"engine {d['engine']!r} does not support the base engine feature{'s' * (len(d['features']) > 1)} "
        f"{', '.join(d['features'])} (variants.yaml `engine:`): every variant runs with its own default")),
    # A case's (`CaseResult.notes`): its reference's checks, and why it never reached judging.
    "reference_inconsistent": NoteKind("warning", lambda d: (
        f"the reference disagrees with itself: its forward pass and generate() score its greedy tokens "
        f"{fmt(d['value'])} apart (> {fmt(d['bound'])}); decode diffs are not evidence against the engine")),
    "not_image_sensitive": NoteKind("warning", lambda d: (
        f"not image-sensitive: with flat grey images the reference's logprobs after the image move by at most "
        f"{fmt(d['moved'])} (< {fmt(d['bound'])}) and its greedy output is unchanged: this case cannot detect an "
        "image-path bug")),
    "stale_reference": NoteKind("warning", lambda d: f"stored reference {_stored(d)}: the reference ran live"),
    "stored_reference_unusable": NoteKind("error", lambda d: f"reference_stale: {_stored(d)}"),
    "invalid_thresholds": NoteKind("error", "{source}: case {case!r}: field 'thresholds': {message}"),
    "render_failed": NoteKind("error", "cannot render the chat template: {message}"),
    "reference_failed": NoteKind("error", lambda d: f"reference failed: {_error(d)}"),
    "reference_ended": NoteKind("error", "reference process ended before returning this case"),
    # A variant's (`VariantResult.notes`). The engine's error records keep its exception's type and message
    # (`error_fields`): known failures match on them (`harness.known`).
    "engine_error": NoteKind("error", lambda d: f"engine error (attempt {d['attempt'] + 1}): {_error(d)}"),
    "engine_failed": NoteKind("error", lambda d: f"engine failed: {_error(d)}"),
    "engine_ended": NoteKind("error", "engine process ended before returning this variant"),
    "not_sent": NoteKind("error", "not sent: the case's reference failed"),
    "no_output": NoteKind("error", "the engine returned no output for this variant"),
    "no_reference_output": NoteKind("error", "no reference output to compare with"),
    "harness_error": NoteKind("error", "harness error judging this variant: {type}: {message}"),
    "known_failure": NoteKind("info", lambda d: f"known failure: {_known(d)}"),
    "cache_not_hit": NoteKind("warning", "no prompt token came from the engine's prefix cache: the path was not "
                                         "exercised on this case"),
    "rerun_reference": NoteKind("info", "compared with {reference}: the reference re-run with these pixels"),
    "base_skipped": NoteKind("info", "not compared with {base}: it was skipped ({reason})"),
    "base_other_pixels": NoteKind("info", "not compared with {base}: this variant's images decode to other pixels "
                                          "than {base}'s (the reference was re-run with them)"),
    "native_stage": NoteKind("info", lambda d: f"where it starts: {_NATIVE[d['stage']]}"),
}


def note(kind: str, **data: Any) -> Note:
    """A note of a declared kind with its values; rendered once here, so a kind without the values its
    text needs fails where it is made, not in a report."""
    if kind not in NOTES:
        raise ValueError(f"unknown note kind {kind!r} (declared in harness/explain.py NOTES: "
                         f"{', '.join(sorted(NOTES))})")
    made = Note(kind, NOTES[kind].level, data)
    note_text(made)
    return made


def note_text(n: Note) -> str:
    """The note in words."""
    kind = NOTES.get(n.kind)
    if kind is None:
        raise ValueError(f"unknown note kind {n.kind!r}: results written by another version of the harness?")
    return kind.text(n.data) if callable(kind.text) else kind.text.format(**n.data)


_EXCEPTION = re.compile(r"([A-Z]\w*): (.*)", re.DOTALL)


def error_fields(error: str) -> dict[str, str | None]:
    """An engine's error text as its exception's type and message ('ValueError: bad' -> ValueError, bad);
    text that does not start with an exception's name (an HTTP status, a stalled worker) is all message."""
    found = _EXCEPTION.fullmatch(error)
    return {"type": found[1], "message": found[2]} if found else {"type": None, "message": error}


def stream_end(reference: bool, fatal: str | None) -> Note:
    """Why what the reference's (or an engine's) stream still owed will never come: the error it was given up
    on, else its process ended."""
    if fatal:
        return note("reference_failed" if reference else "engine_failed", **error_fields(fatal))
    return note("reference_ended" if reference else "engine_ended")


def error_notes(notes: list[Note]) -> list[Note]:
    """The notes that say why a result is an error."""
    return [n for n in notes if n.level == "error"]


def where(f: Finding) -> str:
    """What the output was compared with: 'vs reference', 'vs base', 'attempt 2 vs attempt 1'."""
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


def known_text(variant: VariantResult) -> str | None:
    """The known failure a variant matches, in words (its reason and reproduction), None if none."""
    return next((_known(n.data) for n in variant.notes if n.kind == "known_failure"), None)


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
