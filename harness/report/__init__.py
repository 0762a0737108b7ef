"""Render a run's results into a self-contained HTML page.

Reads only the RunResult (and the case images, when they are still on disk,
for thumbnails), so a report can be re-rendered later without any engine.
Autoescaping is on: model outputs and case text are untrusted.
"""
from __future__ import annotations

import base64
import io
from pathlib import Path

from jinja2 import Environment, PackageLoader, select_autoescape
from PIL import Image

from harness.schema import RunResult

THUMBNAIL_PX = 96

_ENV = Environment(loader=PackageLoader("harness.report", "templates"), autoescape=select_autoescape(["html", "j2"]))


def fmt(value: float | None) -> str:
    """Metrics span 1e-7 to 1; three significant digits show both ends."""
    return "–" if value is None else f"{value:.3g}"


_ENV.filters["fmt"] = fmt


def thumbnail(path: str) -> str | None:
    """A small inline PNG data URL, or None if the image is gone or unreadable."""
    try:
        with Image.open(path) as img:
            img.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX))
            buf = io.BytesIO()
            img.convert("RGB").save(buf, format="PNG")
    except (OSError, ValueError):
        return None
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def render_html(run: RunResult, out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    thumbs = {p: thumbnail(p) for c in run.cases for p in c.images}
    html = _ENV.get_template("report.html.j2").render(run=run, counts=run.counts(), thumbs=thumbs)
    path = out_dir / "index.html"
    path.write_text(html)
    return path
