"""Known engine failures: failures on record are reported as "known", never hidden.

An entry in `harness/config/known_failures.yaml` names the model, engine,
engine version, device, cases, variants and metrics of a real engine bug; a
variant that fails only on those metrics is `known`, with the entry's reason
and reproduction in its reasons.
"""
from __future__ import annotations

import fnmatch
import re
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

import yaml

from harness.schema import METRICS, VariantResult


@dataclass(frozen=True)
class KnownFailure:
    reason: str
    reproduction: str
    cases: tuple[str, ...] | str
    variants: tuple[str, ...] | str
    metrics: tuple[str, ...] | str

    def applies_to(self, case_id: str, variant: str) -> bool:
        return listed(self.cases, case_id) and listed(self.variants, variant)

    def covers(self, case_id: str, variant: VariantResult) -> bool:
        """The variant failed (not errored) on this case, and only on metrics this entry names."""
        if variant.verdict != "fail" or not self.applies_to(case_id, variant.variant):
            return False
        metrics = [reason_metric(r) for r in variant.reasons]
        return all(m is not None and listed(self.metrics, m) for m in metrics)


def listed(allowed: tuple[str, ...] | str, value: str) -> bool:
    return allowed == "*" or value in allowed


def reason_metric(reason: str) -> str | None:
    """The metric a failure reason is about ("vs batched: prefill_max = 0.3 > 1e-4" -> prefill_max)."""
    found = [(m.start(), name) for name in METRICS if (m := re.search(rf"\b{name}\b", reason))]
    return min(found)[1] if found else None


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

    return KnownFailure(" ".join(e["reason"].split()), e.get("reproduction", ""), ids(e.get("cases")),
                        ids(e.get("variants")), ids(e.get("metrics")))


def mark_known(case_id: str, variant: VariantResult, known: Sequence[KnownFailure]) -> VariantResult:
    """`known` with the entry's reason when an entry covers the failure; otherwise unchanged."""
    for entry in known:
        if entry.covers(case_id, variant):
            variant.verdict = "known"
            where = f" (reproduction: {entry.reproduction})" if entry.reproduction else ""
            variant.reasons = [f"known failure: {entry.reason}{where}", *variant.reasons]
            break
    return variant
