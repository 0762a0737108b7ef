"""Number formatting shared by every renderer."""
from __future__ import annotations


def fmt(value: float | int | bool | None) -> str:
    """Metrics span 1e-7 to 1; three significant digits show both ends."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return str(value)
    return f"{value:.3g}"
