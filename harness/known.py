"""Known engine failures: failures on record are reported as "known", never hidden.

An entry in `harness/config/known_failures.yaml` names the model, engine, engine version, device,
and the condition a real engine bug shows under: case ids, variants, and image facts (an alpha
channel, a JPEG subsampling: `harness.decode.facts.ImageFacts`), and the metrics it makes fail. A
variant that fails only on those metrics, under that condition, is `known`, with the entry's reason
and reproduction in its reasons. Matching reads the variant's findings (records), never its text.
"""
from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from harness.cases import Case
from harness.decode.facts import ImageFacts, image_facts
from harness.schema import VariantResult


@dataclass(frozen=True)
class KnownFailure:
    reason: str
    reproduction: str
    cases: tuple[str, ...] | str
    variants: tuple[str, ...] | str
    metrics: tuple[str, ...] | str
    images: dict[str, Any] = field(default_factory=dict)  # image facts one of the case's images must have
    errors: tuple[str, ...] = ()  # an engine error whose every reason names one of these is this bug too

    def applies_to(self, case: Case, variant: str) -> bool:
        """The entry's condition holds for this case on this variant."""
        if not (listed(self.cases, case.id) and listed(self.variants, variant)):
            return False
        return not self.images or any(_has(_facts(path), self.images) for path in case.images)

    def covers(self, case: Case, variant: VariantResult) -> bool:
        """The variant failed on this case, under the entry's condition, and only on metrics the entry
        names; or errored, and only with the engine errors the entry names (an entry without `errors`
        never covers an error: a crash is not a known difference)."""
        if not self.applies_to(case, variant.variant):
            return False
        if variant.verdict == "error":
            return bool(self.errors) and all(any(e in r for e in self.errors) for r in variant.reasons)
        return variant.verdict == "fail" and all(listed(self.metrics, f.metric) for f in variant.failing)


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
    return [_entry(e) for e in entries
            if (fnmatch.fnmatch(model_name, e["model"]) or fnmatch.fnmatch(model_path, e["model"]))
            and e["engine"] == engine and fnmatch.fnmatch(engine_version or "", str(e.get("engine_version", "*")))
            and fnmatch.fnmatch(device, e.get("device", "*"))]


def _entry(e: dict[str, Any]) -> KnownFailure:
    def ids(value: Any) -> tuple[str, ...] | str:
        return "*" if value in (None, "*") else tuple(value)

    unknown = set(e.get("images") or {}) - set(ImageFacts.__dataclass_fields__)
    if unknown:
        raise ValueError(f"known_failures.yaml: entry {e.get('reason', '')[:40]!r}: field 'images': unknown image "
                         f"facts {', '.join(sorted(unknown))} (known: {', '.join(ImageFacts.__dataclass_fields__)})")
    return KnownFailure(" ".join(e["reason"].split()), e.get("reproduction", ""), ids(e.get("cases")),
                        ids(e.get("variants")), ids(e.get("metrics")), dict(e.get("images") or {}),
                        tuple(e.get("errors") or ()))


def mark_known(case: Case, variant: VariantResult, known: Sequence[KnownFailure]) -> VariantResult:
    """`known` with the entry's reason when an entry covers the failure; otherwise unchanged."""
    for entry in known:
        if entry.covers(case, variant):
            variant.verdict = "known"
            where = f" (reproduction: {entry.reproduction})" if entry.reproduction else ""
            variant.reasons = [f"known failure: {entry.reason}{where}", *variant.reasons]
            break
    return variant
