"""Small inline thumbnails, made at run time and stored in results.json, so the
report is self-contained and re-renders after the image files are gone."""
from __future__ import annotations

import base64
import io
from pathlib import Path

from PIL import Image

THUMBNAIL_PX = 64  # the grid shows them at 40 px, a case's conversation at 64: no more is sent


def thumbnail(path: str | Path, size: int = THUMBNAIL_PX) -> str:
    """A JPEG data URL at most `size` px on a side; empty if the image cannot be read."""
    try:
        with Image.open(path) as img:
            img.draft("RGB", (size, size))  # JPEG: decode at reduced scale, fast even for 4000x3000
            img = img.convert("RGB")
            img.thumbnail((size, size))
            buf = io.BytesIO()
            img.save(buf, format="JPEG", quality=75)
    except (OSError, ValueError):
        return ""
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()
