"""The decoder registry: what each decoder is, whether it can run here, and decoding by name.

A decoder whose library is missing or whose op cannot run (a CUDA-only
torchvision build, no GPU) is *unavailable with a reason*: the harness reports
it and moves on instead of crashing a run on a machine that lacks it.
"""
from __future__ import annotations

import functools
import importlib
import io
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

DecodeFn = Callable[[Path], Image.Image | np.ndarray]

JPEG_MAGIC = b"\xff\xd8\xff"


class ImageDecodeError(ValueError):
    """An image of a case could not be decoded; the message names the field and the file."""


class DecoderUnavailable(ValueError):
    """The decoder cannot run on this machine; the message is the reason."""


class NotApplicable(ValueError):
    """The decoder does not handle this kind of file (a JPEG-only decoder given a PNG)."""


@dataclass(frozen=True)
class DecoderSpec:
    """One way of turning an image file into RGB pixels, described well enough to reproduce it."""

    name: str
    library: str  # import name; its __version__ is the decoder's version
    decode: DecodeFn  # returns an RGB PIL image or an HxWx3 uint8 array
    flags: dict[str, Any] = field(default_factory=dict)
    jpeg_only: bool = False


@dataclass(frozen=True)
class Availability:
    available: bool
    version: str | None
    reason: str | None  # why not available; None when it is


DECODERS: dict[str, DecoderSpec] = {}


def register(spec: DecoderSpec) -> DecoderSpec:
    DECODERS[spec.name] = spec
    return spec


def get_decoder(name: str) -> DecoderSpec:
    try:
        return DECODERS[name]
    except KeyError:
        raise ValueError(f"unknown decoder {name!r} (known: {', '.join(sorted(DECODERS))})") from None


@functools.cache
def availability(name: str) -> Availability:
    """Import the library and decode a tiny JPEG with it: import success alone does not prove the op runs."""
    spec = get_decoder(name)
    try:
        version = str(importlib.import_module(spec.library).__version__)
    except Exception as exc:  # any import failure means unavailable, never a crash
        return Availability(False, None, _reason(exc))
    with tempfile.TemporaryDirectory() as tmp:
        probe = Path(tmp) / "probe.jpg"
        probe.write_bytes(_probe_jpeg())
        try:
            spec.decode(probe)
        except Exception as exc:
            return Availability(False, version, _reason(exc))
    return Availability(True, version, None)


def is_jpeg(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(len(JPEG_MAGIC)) == JPEG_MAGIC


def decode_image(path: Path, name: str) -> Image.Image | np.ndarray:
    """Decode with `name` in whatever form it produces; raises ValueError/OSError subclasses only."""
    spec = get_decoder(name)
    state = availability(name)
    if not state.available:
        raise DecoderUnavailable(f"decoder {name!r} is unavailable: {state.reason}")
    path = Path(path)
    if spec.jpeg_only and not is_jpeg(path):
        raise NotApplicable("not a JPEG")
    return spec.decode(path)


def decode(path: Path, decoder: str = "pil") -> Image.Image:
    """An RGB PIL image, the form HF processors and vLLM take."""
    result = decode_image(path, decoder)
    return result if isinstance(result, Image.Image) else Image.fromarray(result, "RGB")


def decode_array(path: Path, decoder: str = "pil") -> np.ndarray:
    """An HxWx3 uint8 RGB array, the form the pixel statistics take."""
    result = decode_image(path, decoder)
    return np.asarray(result) if isinstance(result, Image.Image) else result


def same_pixels(paths: Sequence[str | Path], decoder: str, reference: str = "pil") -> bool:
    """Whether `decoder` gives every image exactly the reference decoder's pixels (False if either fails)."""
    try:
        return all(np.array_equal(decode_array(Path(p), decoder), decode_array(Path(p), reference)) for p in paths)
    except (OSError, ValueError):
        return False


def decode_all(paths: Sequence[str | Path], decoder: str = "pil") -> list[Image.Image]:
    """Decode a case's images as an engine would, naming `images[i]` and the file when one fails.

    A JPEG-only decoder leaves other formats to PIL, as engines with a JPEG
    fast path (nvJPEG, libjpeg-turbo) do.
    """
    images = []
    for i, path in enumerate(paths):
        try:
            try:
                images.append(decode(Path(path), decoder))
            except NotApplicable:
                images.append(decode(Path(path), "pil"))
        except (OSError, ValueError) as exc:
            raise ImageDecodeError(f"field 'images[{i}]': {path}: cannot decode with {decoder}: "
                                   f"{type(exc).__name__}: {exc}") from exc
    return images


def _reason(exc: Exception) -> str:
    return str(exc) if isinstance(exc, DecoderUnavailable) else f"{type(exc).__name__}: {exc}"


@functools.cache
def _probe_jpeg() -> bytes:
    """A 16x16 4:2:0 JPEG, enough to exercise a decoder's whole path."""
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 40, 40)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def decode_videos(videos: Sequence[Sequence[str | Path]], frozen: bool = False) -> list[np.ndarray]:
    """Each video's frames decoded with PIL into one TxHxWx3 uint8 array, the form engines and processors
    take; `frozen` repeats the first frame (a video whose content does not change: the image-sensitivity
    check's counterpart for video)."""
    arrays = []
    for frames in videos:
        stack = np.stack([decode_array(Path(f)) for f in frames])
        arrays.append(np.repeat(stack[:1], len(stack), axis=0) if frozen else stack)
    return arrays
