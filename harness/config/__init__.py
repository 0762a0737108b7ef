"""Thresholds: per-dtype defaults with reasons, overridable per model and case."""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from harness.schema import METRIC_INFO

# Looser first: the tolerance of a pair is the tolerance of its least precise side.
_PRECISION_ORDER = ("bfloat16", "float16", "float32")


@dataclass(frozen=True)
class Thresholds:
    """The tolerances in force for one case, and where each came from."""

    values: dict[str, Any]
    reasons: dict[str, str]

    def __getitem__(self, key: str) -> Any:
        return self.values[key]


def ceiling_key(metric: str) -> str:
    """The thresholds key of a metric's absolute bound: `name` bounds a lower-is-better metric from
    above, `name_min` a higher-is-better one from below (as in the gate's policies)."""
    return metric if METRIC_INFO[metric]["better"] == "lower" else f"{metric}_min"


def load_config(path: Path | None = None) -> dict[str, Any]:
    """The packaged thresholds, with the file at `path` (if any) layered over them: a user's file
    holds only what it changes (a converted model's `models:` entry), every default keeps its reason."""
    config = yaml.safe_load(resources.files("harness.config").joinpath("thresholds.yaml").read_text())
    return _merge(config, yaml.safe_load(Path(path).read_text()) or {}) if path is not None else config


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        both = isinstance(value, dict) and isinstance(merged.get(key), dict)
        merged[key] = _merge(merged[key], value) if both else value
    return merged


def effective_dtype(engine_dtype: str, reference_dtype: str) -> str:
    """The less precise of the two dtypes decides the tolerance."""
    for dtype in _PRECISION_ORDER:
        if dtype in (engine_dtype, reference_dtype):
            return dtype
    raise ValueError(f"no thresholds for dtypes {engine_dtype!r} / {reference_dtype!r}")


def resolve(config: dict[str, Any], dtype: str, model: str = "", case_overrides: dict[str, Any] | None = None) -> Thresholds:
    """Defaults for `dtype`, then matching model overrides, then the case's own."""
    defaults = config["dtypes"].get(dtype)
    if defaults is None:
        raise ValueError(f"thresholds config has no entry for dtype {dtype!r}")
    values = {k: v["value"] for k, v in defaults.items()}
    reasons = {k: v["reason"] for k, v in defaults.items()}
    for pattern, per_dtype in (config.get("models") or {}).items():
        if fnmatch.fnmatch(model, pattern):
            for key, spec in (per_dtype.get(dtype) or {}).items():
                values[key] = spec["value"]
                reasons[key] = f"model override ({pattern}): {spec['reason']}"
    for key, value in (case_overrides or {}).items():
        if key not in values:
            raise ValueError(f"unknown threshold {key!r} (known: {', '.join(sorted(values))})")
        values[key] = value
        reasons[key] = "set by the case"
    return Thresholds(values, reasons)


def resolve_section(config: dict[str, Any], name: str) -> Thresholds:
    """A section of checks that are not per dtype (`decode:`, `reference:`), with their reasons."""
    section = config.get(name)
    if not section:
        raise ValueError(f"thresholds config has no {name!r} section")
    return Thresholds({k: v["value"] for k, v in section.items()}, {k: v["reason"] for k, v in section.items()})
