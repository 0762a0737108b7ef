"""Image decoders in a registry: the decode path is part of what parity tests.

PIL is the reference decoder (it is what HF processors are fed). Each decoder
turns a file into an RGB PIL image; adding one is one function and one entry.
"""
from __future__ import annotations

from collections.abc import Callable
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


def decode(path: Path, decoder: str = "pil") -> Image.Image:
    try:
        fn = DECODERS[decoder]
    except KeyError:
        raise ValueError(f"unknown decoder {decoder!r} (known: {', '.join(sorted(DECODERS))})") from None
    return fn(Path(path))
