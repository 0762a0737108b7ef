"""Known engine failures: failures on record are reported as "known", never hidden.

An entry in `harness/config/known_failures.yaml` names the model, engine, engine version, device,
and the condition a real engine bug shows under: case ids, variants, and image facts (an alpha
channel, a JPEG subsampling: `harness.inputs.decode.facts.ImageFacts`), and the metrics it makes fail. A
variant that fails only on those metrics, under that condition, is `known`, with the entry's reason
and reproduction as a note; a variant that errors only with the engine errors an entry names is too.
Matching reads the variant's findings and error notes (records), never text.
"""
from __future__ import annotations

import fnmatch
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from harness.core.notes import error_notes, note
from harness.core.schema import Note, VariantResult
from harness.inputs.cases import Case
from harness.inputs.decode.facts import ImageFacts, image_facts
from harness.inputs.models import architecture

# The notes an engine's failure leaves on a variant (`harness.core.notes.NOTES`): the only errors an entry can
# cover (a harness error, or a reference that never came, is never an engine bug on record).
# The error records an entry's `errors` patterns are matched on: the engine's, and the reference's (a
# reference bug is on record too: the case cannot be judged, for a reason someone has already found).
ENGINE_ERRORS = ("engine_error", "engine_failed", "reference_failed")


@dataclass(frozen=True)
class ErrorPattern:
    """An engine error an entry covers: the exception's type (exact), a regular expression searched in
    its message, or both."""

    type: str | None = None
    message: str | None = None

    def matches(self, record: Note) -> bool:
        if record.kind not in ENGINE_ERRORS:
            return False
        return ((self.type is None or record.data.get("type") == self.type)
                and (self.message is None or re.search(self.message, record.data.get("message") or "") is not None))


@dataclass(frozen=True)
class KnownFailure:
    reason: str
    reproduction: str
    cases: tuple[str, ...] | str
    variants: tuple[str, ...] | str
    metrics: tuple[str, ...] | str
    images: dict[str, Any] = field(default_factory=dict)  # image facts one of the case's images must have
    errors: tuple[ErrorPattern, ...] = ()  # an error cell whose every error matches one of these is this bug too
    model: str = "*"  # the entry's model pattern: "*" for a record of the engine, not of one model
    media: tuple[str, ...] = ()  # what the case must hold ("images", "videos") for the bug to show
    # The bug shows only where a condition no field can name holds (a chosen token that is not the most likely
    # one): a cell it applies to that passes says nothing, as with `errors`.
    sometimes: bool = False

    @property
    def strict(self) -> bool:
        """A cell it applies to must fail: the record names its whole condition (not an error's, not `sometimes`)."""
        return not self.errors and not self.sometimes

    def applies_to(self, case: Case, variant: str) -> bool:
        """The entry's condition holds for this case on this variant."""
        if not (listed(self.cases, case.id) and listed(self.variants, variant)):
            return False
        if not all(getattr(case, medium) for medium in self.media):
            return False
        return not self.images or any(_has(_facts(path), self.images) for path in case.images)

    def covers(self, case: Case, variant: VariantResult) -> bool:
        """The variant failed on this case, under the entry's condition, and only on metrics the entry
        names; or errored, and only with the engine errors the entry names (an entry without `errors`
        never covers an error: a crash is not a known difference)."""
        if not self.applies_to(case, variant.variant):
            return False
        if variant.verdict == "error":
            found = error_notes(variant.notes)
            return bool(self.errors and found) and all(any(p.matches(n) for p in self.errors) for n in found)
        return variant.verdict == "fail" and all(listed(self.metrics, f.metric) for f in variant.failing)


MEDIA = frozenset({"images", "videos"})  # a case's media lists a record may require


def listed(allowed: tuple[str, ...] | str, value: str) -> bool:
    return allowed == "*" or value in allowed


@lru_cache(maxsize=256)
def _facts(path: Path) -> ImageFacts | None:
    try:
        return image_facts(path)
    except OSError:
        return None


def _has(facts: ImageFacts | None, wanted: dict[str, Any]) -> bool:
    return facts is not None and all(getattr(facts, key, None) == value for key, value in wanted.items())


def load_known(model_name: str, model_path: str, engine: str, engine_version: str | None, device: str,
               text: str | None = None) -> list[KnownFailure]:
    """The entries that apply to this run (packaged file unless `text` is given)."""
    text = text if text is not None else resources.files("harness.config").joinpath("known_failures.yaml").read_text()
    entries = (yaml.safe_load(text) or {}).get("known_failures") or []
    arch = architecture(model_path) or ""
    return [_entry(e) for e in entries
            if (fnmatch.fnmatch(model_name, e["model"]) or fnmatch.fnmatch(model_path, e["model"]))
            and fnmatch.fnmatch(arch, e.get("architecture", "*"))
            and e["engine"] == engine and fnmatch.fnmatch(engine_version or "", str(e.get("engine_version", "*")))
            and fnmatch.fnmatch(device, e.get("device", "*"))]


def _entry(e: dict[str, Any]) -> KnownFailure:
    def ids(value: Any) -> tuple[str, ...] | str:
        return "*" if value in (None, "*") else tuple(value)

    where = f"known_failures.yaml: entry {e.get('reason', '')[:40]!r}"
    media = tuple(e.get("media") or ())
    if set(media) - MEDIA:
        raise ValueError(f"{where}: field 'media': unknown {', '.join(sorted(set(media) - MEDIA))} "
                         f"(known: {', '.join(sorted(MEDIA))})")
    unknown = set(e.get("images") or {}) - set(ImageFacts.__dataclass_fields__)
    if unknown:
        raise ValueError(f"{where}: field 'images': unknown image facts {', '.join(sorted(unknown))} "
                         f"(known: {', '.join(ImageFacts.__dataclass_fields__)})")
    return KnownFailure(" ".join(e["reason"].split()), e.get("reproduction", ""), ids(e.get("cases")),
                        ids(e.get("variants")), ids(e.get("metrics")), dict(e.get("images") or {}),
                        tuple(_error_pattern(p, f"{where}: field 'errors[{i}]'")
                              for i, p in enumerate(e.get("errors") or ())), str(e["model"]), media,
                        bool(e.get("sometimes", False)))


def _error_pattern(spec: Any, where: str) -> ErrorPattern:
    """`{type: <exception type>, message: <regular expression>}`, either or both."""
    if not isinstance(spec, dict) or not spec or set(spec) - {"type", "message"}:
        raise ValueError(f"{where}: expected a mapping of type (the exception's type) and/or message (a regular "
                         f"expression searched in its message), got {spec!r}")
    try:
        re.compile(spec.get("message") or "")
    except re.error as exc:
        raise ValueError(f"{where}: field 'message': not a regular expression: {exc}") from exc
    return ErrorPattern(spec.get("type"), spec.get("message"))


def known_reference_failure(case: Case, why: Note, known: Sequence[KnownFailure]) -> KnownFailure | None:
    """The entry whose `errors` cover the reference's own failure on this case (no cell could be judged)."""
    return next((entry for entry in known if why.kind == "reference_failed" and entry.errors
                 and entry.applies_to(case, "reference") and any(p.matches(why) for p in entry.errors)), None)


def mark_known(case: Case, variant: VariantResult, known: Sequence[KnownFailure]) -> VariantResult:
    """`known` with the entry's record when an entry covers the failure; a passing cell a record of failing
    metrics applies to keeps its verdict and says the record no longer matches (pytest's strict XPASS: a record
    of engine errors, or of a bug that shows only `sometimes`, says nothing of a cell that passed); otherwise
    unchanged."""
    for entry in known:
        if entry.covers(case, variant):
            variant.verdict = "known"
            variant.notes.insert(0, note("known_failure", reason=entry.reason, reproduction=entry.reproduction))
            break
    else:
        entry = next((e for e in known if e.strict and e.applies_to(case, variant.variant)), None)
        if entry is not None and variant.verdict == "pass":
            variant.notes.append(note("known_unmatched", reason=entry.reason, reproduction=entry.reproduction))
    return variant
