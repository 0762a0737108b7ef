"""Notes: what is not a measurement (a warning, why a result is an error, a known failure matched), as
records (`harness.core.schema.Note`: kind, level, data). Every kind is declared here once, with its level
and its words; `note` makes one (a kind without the values its words need fails where it is made), and
`note_text` is how `harness.judging.explain` and every renderer turn one into a sentence."""
from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from harness.core.format import fmt
from harness.core.schema import Note


@dataclass(frozen=True)
class NoteKind:
    """One kind of note: its level (`harness.core.schema.NOTE_LEVELS`) and its text, a format string over the
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
    "sampled_not_scored": NoteKind("info", lambda d: (
        f"the sampled answers of {', '.join(d['variants'])} are not scored by the reference ({d['why']}): they are "
        "judged on their prompt logprobs and what they return only")),
    "unsupported_base_features": NoteKind("info", lambda d: (
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
    # (`error_fields`): known failures match on them (`harness.run.known`).
    "engine_error": NoteKind("error", lambda d: f"engine error (attempt {d['attempt'] + 1}): {_error(d)}"),
    "engine_failed": NoteKind("error", lambda d: f"engine failed: {_error(d)}"),
    "engine_ended": NoteKind("error", "engine process ended before returning this variant"),
    "not_sent": NoteKind("error", "not sent: the case's reference failed"),
    "no_output": NoteKind("error", "the engine returned no output for this variant"),
    "no_reference_output": NoteKind("error", "no reference output to compare with"),
    "harness_error": NoteKind("error", "harness error judging this variant: {type}: {message}"),
    "known_failure": NoteKind("info", lambda d: f"known failure: {_known(d)}"),
    # A record that applies to the cell and did not show (the engine may be fixed: pytest's strict XPASS), and
    # a known cell that passed in the last run of the history (a bug on record newly reaching this cell).
    "known_unmatched": NoteKind("warning", lambda d: (
        f"a known failure on record did not show: the engine may be fixed; narrow or remove the record: "
        f"{_known(d)}")),
    "known_new": NoteKind("warning", "known failure new to this run: this cell passed in the last run of the "
                                     "history ({previous})"),
    "cache_not_hit": NoteKind("warning", "no prompt token came from the engine's prefix cache: the path was not "
                                         "exercised on this case"),
    "rerun_reference": NoteKind("info", "compared with {reference}: the reference re-run with these pixels"),
    "base_skipped": NoteKind("info", "not compared with {base}: it was skipped ({reason})"),
    "base_other_pixels": NoteKind("info", "not compared with {base}: this variant's images decode to other pixels "
                                          "than {base}'s (the reference was re-run with them)"),
    "native_stage": NoteKind("info", lambda d: f"where it starts: {_NATIVE[d['stage']]}"),
    "not_scored": NoteKind("warning", "answer {answer}'s tokens were not scored by the reference: {why}"),
}


def note(kind: str, **data: Any) -> Note:
    """A note of a declared kind with its values; rendered once here, so a kind without the values its
    text needs fails where it is made, not in a report."""
    if kind not in NOTES:
        raise ValueError(f"unknown note kind {kind!r} (declared in harness/core/notes.py NOTES: "
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
