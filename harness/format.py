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
