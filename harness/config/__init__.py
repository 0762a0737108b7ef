"""Thresholds: per-dtype defaults with reasons, overridable per model and case.

Every key is checked against the metrics' declaration (`harness.core.schema.metric`) when a file is loaded: a
misspelt metric fails there, naming the file and the key, instead of silently judging nothing."""
from __future__ import annotations

import fnmatch
import math
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from importlib.abc import Traversable
from pathlib import Path
from typing import Any, NoReturn

import yaml

from harness.core.schema import METRIC_INFO, METRICS

# Looser first: the tolerance of a pair is the tolerance of its least precise side.
_PRECISION_ORDER = ("bfloat16", "float16", "float32")
# A dtype's keys that belong to no one metric: the floor rule's multiples and the greedy rule's mode.
RULE_KEYS = ("k", "k_warn", "greedy")
GREEDY_MODES = ("exact", "topk")
# The sections of a thresholds file: per dtype, per model glob, and checks that are not per dtype.
SECTIONS = ("dtypes", "models", "decode", "floor", "reference", "suite")


class ConfigError(ValueError):
    """A configuration file that does not fit what it configures; the message names the file and the key."""


def fail(source: str, path: Sequence[object], message: str) -> NoReturn:
    """Raise a ConfigError for the key at `path` (its parents' keys, outermost first) of file `source`."""
    where = ".".join(str(p) for p in path)
    raise ConfigError(f"{source}: {where}: {message}" if where else f"{source}: {message}")


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


def threshold_keys(metric: str) -> tuple[str, ...]:
    """The thresholds keys a metric's rule takes: the bound and the rounding floor `name_atol` for the floor
    rule, the bound alone for the bound rule, none for the others (informative, greedy, structural)."""
    rule = METRIC_INFO[metric]["rule"]
    if rule == "floor":
        return ceiling_key(metric), f"{metric}_atol"
    return (ceiling_key(metric),) if rule == "bound" else ()


def multiple_keys(metric: str) -> tuple[str, ...]:
    """A floor-judged metric's own multiples, `name_k` and `name_k_warn` (optional: without them it takes the
    dtype's `k` and `k_warn`), calibrated on its clean spread (`vlm-parity calibrate`)."""
    return (f"{metric}_k", f"{metric}_k_warn") if METRIC_INFO[metric]["rule"] == "floor" else ()


def multiple(th: Thresholds, metric: str, key: str) -> float:
    """The metric's `k` or `k_warn` (`key`): its own where set, else the dtype's."""
    return th.values.get(f"{metric}_{key}", th.values[key])


def _shadowed(lower: dict[str, Any], layer: dict[str, Any]) -> dict[str, Any]:
    """`lower` without the metrics' own multiples a higher `layer` overrides by setting the dtype's `k` or
    `k_warn` (a model entry, a case or a user's file that says `k: 12` means every metric), unless the layer
    sets that metric's own too."""
    dropped = {f"{m}_{key}" for key in ("k", "k_warn") if key in layer for m in METRICS}
    return {k: v for k, v in lower.items() if k not in dropped or k in layer}


# Every key a dtype's thresholds have (the packaged file sets each, the metrics' own multiples where measured),
# and those a case may change (numbers).
REQUIRED_KEYS: tuple[str, ...] = (*RULE_KEYS, *(key for m in METRICS for key in threshold_keys(m)))
DTYPE_KEYS: tuple[str, ...] = (*REQUIRED_KEYS, *(key for m in METRICS for key in multiple_keys(m)))
CASE_THRESHOLD_KEYS: tuple[str, ...] = tuple(key for key in DTYPE_KEYS if key != "greedy")


def key_problem(key: str, known: Sequence[str]) -> str | None:
    """None when `key` is one of `known`; else why not, naming the metric it seems meant for."""
    if key in known:
        return None
    metric = next((m for m in METRICS if key in (m, f"{m}_min", f"{m}_atol", f"{m}_k", f"{m}_k_warn")), None)
    if metric is None:
        return f"unknown metric {key!r} (known: {', '.join(known)})"
    info = METRIC_INFO[metric]
    fits = [k for k in known if k in (metric, f"{metric}_min", f"{metric}_atol", f"{metric}_k", f"{metric}_k_warn")]
    if not fits:
        return f"metric {metric!r} (rule {info['rule']!r}) takes no key here (known: {', '.join(known)})"
    return (f"{key!r} does not fit metric {metric!r} ({info['better']} is better, rule {info['rule']!r}): "
            f"use {' or '.join(repr(k) for k in fits)}")


def load_config(path: Path | None = None) -> dict[str, Any]:
    """The packaged thresholds, with the file at `path` (if any) layered over them: a user's file
    holds only what it changes (a converted model's `models:` entry), every default keeps its reason.
    Both are checked against the metrics' declaration: ConfigError names the file and the key."""
    packaged = resources.files("harness.config").joinpath("thresholds.yaml")
    config = read_yaml(packaged)
    check_thresholds(config, str(packaged))
    if path is None:
        return config
    override = read_yaml(Path(path)) or {}
    check_thresholds(override, str(path), config)
    for dtype, keys in (override.get("dtypes") or {}).items():  # a file's `k` means every metric of the dtype
        config["dtypes"][dtype] = _shadowed(config["dtypes"][dtype], keys)
    return _merge(config, override)


def read_yaml(path: Path | Traversable) -> Any:
    """A configuration file's content; ConfigError when it cannot be read or parsed."""
    try:
        return yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from exc


def check_thresholds(doc: Any, source: str, packaged: dict[str, Any] | None = None) -> None:
    """A thresholds file against the metrics' declaration. The packaged file (`packaged` None) sets every key
    the rules require of every dtype (the metrics' own multiples where measured) with its value and reason; a user's file layered over it may set any of them, and the
    keys of its `decode:`, `floor:` and `reference:` sections must be the packaged file's."""
    for section, content in mapping(doc, source, ()).items():
        if section not in SECTIONS:
            fail(source, (section,), f"unknown section (known: {', '.join(SECTIONS)})")
        if section == "models" and content is None:  # `models:` with nothing under it
            continue
        mapping(content, source, (section,))
    dtypes = doc.get("dtypes", {})
    for dtype, keys in dtypes.items():
        _check_dtype(keys, source, ("dtypes", dtype), complete=packaged is None)
    missing = [d for d in _PRECISION_ORDER if d not in dtypes] if packaged is None else []
    if missing:
        fail(source, ("dtypes",), f"missing {', '.join(missing)}")
    for pattern, per_dtype in (doc.get("models") or {}).items():
        for dtype, keys in mapping(per_dtype, source, ("models", pattern)).items():
            _check_dtype(keys, source, ("models", pattern, dtype), complete=False)
    for name in SECTIONS[2:]:
        section = doc.get(name, {})
        known = tuple(section) if packaged is None else tuple(packaged.get(name, {}))
        for key, spec in section.items():
            if key not in known:
                fail(source, (name, key), f"unknown key (known: {', '.join(known)})")
            _entry(spec, source, (name, key), reason=packaged is None)


def _check_dtype(keys: Any, source: str, path: tuple[object, ...], complete: bool) -> None:
    """One dtype's thresholds: known keys only, a number each (`greedy` a mode), all of them in the packaged
    file; a model's entry has its own reason (it replaces none)."""
    if path[-1] not in _PRECISION_ORDER:
        fail(source, path, f"unknown dtype (known: {', '.join(_PRECISION_ORDER)})")
    for key, spec in mapping(keys, source, path).items():
        problem = key_problem(str(key), DTYPE_KEYS)
        if problem:
            fail(source, (*path, key), problem)
        value = _entry(spec, source, (*path, key), reason=complete or path[0] == "models")
        if key == "greedy" and value not in GREEDY_MODES:
            fail(source, (*path, key), f"value must be one of {', '.join(GREEDY_MODES)}, got {value!r}")
        if key != "greedy" and not _number(value):
            fail(source, (*path, key), f"value must be a number, got {value!r}")
    missing = [k for k in REQUIRED_KEYS if k not in keys] if complete else []
    if missing:
        fail(source, path, f"missing {', '.join(missing)}")


def _entry(spec: Any, source: str, path: tuple[object, ...], reason: bool) -> Any:
    """A thresholds entry, `{value: ..., reason: ...}`: its value. `reason` may be left to the packaged entry
    it changes (`reason` False) but not where no such entry exists."""
    entry = mapping(spec, source, path, "a mapping with `value` and `reason`")
    needed = ("value", "reason") if reason else ("value",)
    if set(entry) - {"value", "reason"} or not set(needed) <= set(entry):
        fail(source, path, f"must be a mapping with `value` and `reason`, got keys {', '.join(map(str, entry))}")
    return entry["value"]


def mapping(value: Any, source: str, path: Sequence[object], what: str = "a mapping") -> dict[Any, Any]:
    """`value` when it is a mapping, else ConfigError naming the file and the key."""
    if not isinstance(value, dict):
        fail(source, path, f"must be {what}, got {value!r}")
    return value


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)


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
            layer = per_dtype.get(dtype) or {}
            values = _shadowed(values, layer)
            for key, spec in layer.items():
                values[key] = spec["value"]
                reasons[key] = f"model override ({pattern}): {spec['reason']}"
    values = _shadowed(values, case_overrides or {})
    for key, value in (case_overrides or {}).items():
        problem = key_problem(key, CASE_THRESHOLD_KEYS)
        if problem:
            raise ValueError(problem)
        values[key] = value
        reasons[key] = "set by the case"
    return Thresholds(values, reasons)


def resolve_section(config: dict[str, Any], name: str) -> Thresholds:
    """A section of checks that are not per dtype (`decode:`, `reference:`), with their reasons."""
    section = config.get(name)
    if not section:
        raise ValueError(f"thresholds config has no {name!r} section")
    return Thresholds({k: v["value"] for k, v in section.items()}, {k: v["reason"] for k, v in section.items()})
