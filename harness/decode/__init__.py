"""Image decoders in a registry: the decode path is part of what parity tests.

PIL is the reference decoder (it is what HF processors are fed). Each decoder
turns a file into an RGB PIL image; adding one is one function and one entry.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from PIL import Image

Decoder = Callable[[Path], Image.Image]

DECODERS: dict[str, Decoder] = {}


def register(name: str) -> Callable[[Decoder], Decoder]:
    def add(fn: Decoder) -> Decoder:
        DECODERS[name] = fn
        return fn
    return add


@register("pil")
def decode_pil(path: Path) -> Image.Image:
    """PIL's default decode, converted to RGB the way HF processors expect."""
    with Image.open(path) as img:
        img.load()
        return img.convert("RGB")


class ImageDecodeError(ValueError):
    """An image of a case could not be decoded; the message names the field and the file."""


def decode(path: Path, decoder: str = "pil") -> Image.Image:
    try:
        fn = DECODERS[decoder]
    except KeyError:
        raise ValueError(f"unknown decoder {decoder!r} (known: {', '.join(sorted(DECODERS))})") from None
    return fn(Path(path))


def decode_all(paths: Sequence[str | Path], decoder: str = "pil") -> list[Image.Image]:
    """Decode a case's images, naming `images[i]` and the file when one fails."""
    images = []
    for i, path in enumerate(paths):
        try:
            images.append(decode(Path(path), decoder))
        except (OSError, ValueError) as exc:
            raise ImageDecodeError(f"field 'images[{i}]': {path}: cannot decode with {decoder}: "
                                   f"{type(exc).__name__}: {exc}") from exc
    return images
