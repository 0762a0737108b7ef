"""Number formatting shared by every renderer (CLI, report, step summary, pytest messages)."""
from __future__ import annotations

import math


def fmt(value: float | int | bool | None) -> str:
    """Metrics span 1e-12 to 1; three significant digits show both ends."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return str(value)
    return f"{value:.3g}"


def ratio(value: float | None) -> str:
    """An error over its floor: '1.7x', '27x', '1.2e+05x'; '–' where the floor is zero."""
    if value is None:
        return "–"
    if not math.isfinite(value):
        return "inf x"
    return f"{value:.2g}x" if value < 100 else f"{value:.3g}x"


def against_floor(value_ratio: float | None, floor: float | None) -> str:
    """'1.7x floor 6.7e-6', 'floor 0', or 'no floor'."""
    if floor is None:
        return "no floor"
    if value_ratio is None:
        return f"floor {fmt(floor)}"
    return f"{ratio(value_ratio)} floor {fmt(floor)}"


UNITS = (("_tok_s", "tok/s"), ("_s", "s"), ("_mb", "MB"))  # a provenance key's suffix -> its unit


def display(value: object, key: str = "") -> str:
    """A provenance or settings value for people: numbers with their unit and at most 4 significant digits,
    mappings and lists as readable 'key: value' and comma lists, booleans as yes/no."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        unit = next((u for suffix, u in UNITS if key.endswith(suffix)), "")
        return f"{value:.4g}{' ' + unit if unit else ''}"
    if isinstance(value, dict):
        shown = [f"{k}: {display(v, str(k))}" for k, v in value.items() if v not in (None, "", [], {}, False)]
        return "; ".join(shown) or "–"
    if isinstance(value, (list, tuple, set, frozenset)):
        return ", ".join(display(v) for v in value) or "–"
    return "–" if value is None else str(value)
