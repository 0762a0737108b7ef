"""What an image file is, and named findings where decoders treat it differently.

Facts come from the file's headers. Findings come from what the decoders
actually returned: each is stated only when the pixels show it (PIL really
clipped, OpenCV really rotated), so a finding explains a delta instead of
guessing at one.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, JpegImagePlugin

from harness.inputs.decode.deltas import PixelDeltas
from harness.inputs.decode.registry import DecoderSpec

_SUBSAMPLING = {0: "4:4:4", 1: "4:2:2", 2: "4:2:0"}  # JpegImagePlugin.get_sampling codes
_EXIF_ORIENTATION_TAG = 0x0112
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_ORIENTATION = {  # EXIF orientation -> the transform a viewer applies to the stored pixels
    2: ("mirrored", np.fliplr), 3: ("rotated 180", lambda a: np.rot90(a, 2)), 4: ("flipped", np.flipud),
    5: ("transposed", lambda a: np.swapaxes(a, 0, 1)), 6: ("rotated 90 clockwise", lambda a: np.rot90(a, -1)),
    7: ("transversed", lambda a: np.rot90(np.swapaxes(a, 0, 1), 2)), 8: ("rotated 90 anticlockwise", np.rot90),
}
# Findings that do not explain a delta: a delta carrying only these is unexplained.
UNEXPLAINED = frozenset({"unexplained", "shape-mismatch"})


@dataclass(frozen=True)
class ImageFacts:
    format: str | None  # PIL's format name: "JPEG", "PNG", ...
    mode: str  # PIL's mode as opened: "RGB", "L", "CMYK", "RGBA", "I;16", ...
    size: tuple[int, int]  # width, height as stored (before any EXIF orientation)
    bit_depth: int  # bits per sample
    has_alpha: bool
    subsampling: str | None  # JPEG: "4:4:4", "4:2:2", "4:2:0", "gray", "other"; None when not JPEG or CMYK
    progressive: bool | None  # JPEG only
    exif_orientation: int | None  # 1..8, None when absent
    cmyk: bool

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "size": list(self.size)}

    def summary(self) -> str:
        """One line for tables: 'JPEG RGB 300x200 8-bit 4:2:0 progressive exif=6'."""
        parts = [self.format or "?", self.mode, f"{self.size[0]}x{self.size[1]}", f"{self.bit_depth}-bit"]
        parts += [p for p in (self.subsampling, "progressive" if self.progressive else None,
                              "alpha" if self.has_alpha else None) if p]
        if self.exif_orientation is not None:
            parts.append(f"exif={self.exif_orientation}")
        return " ".join(parts)


@dataclass(frozen=True)
class Finding:
    """Something awkward a decoder did to an image; `name` is stable, `detail` has the measurements."""

    name: str
    detail: str

    def __str__(self) -> str:
        return f"{self.name}: {self.detail}"


def image_facts(path: Path) -> ImageFacts:
    with Image.open(path) as img:
        is_jpeg = isinstance(img, JpegImagePlugin.JpegImageFile)
        orientation = img.getexif().get(_EXIF_ORIENTATION_TAG)
        return ImageFacts(
            format=img.format,
            mode=img.mode,
            size=img.size,
            bit_depth=_bit_depth(img, Path(path)),
            has_alpha=img.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in img.info,
            subsampling=_subsampling(img) if is_jpeg else None,
            progressive=bool(img.info.get("progressive")) if is_jpeg else None,
            exif_orientation=int(orientation) if orientation in range(1, 9) else None,
            cmyk=img.mode == "CMYK",
        )


def image_findings(path: Path, facts: ImageFacts, reference: np.ndarray) -> list[Finding]:
    """What PIL, the reference, does to this image that a reader would not expect."""
    findings = []
    orientation = facts.exif_orientation
    if orientation in _ORIENTATION and reference.shape[1::-1] == facts.size:
        shown = _ORIENTATION[orientation][1](reference)
        findings.append(Finding("exif-orientation", (
            f"EXIF orientation {orientation} ({_ORIENTATION[orientation][0]} for display): pil ignores it, so the "
            f"model sees the stored {_size(reference)} pixels, not the {_size(shown)} image a viewer shows")))
    with Image.open(path) as img:
        if facts.has_alpha:
            rgba = np.asarray(img.convert("RGBA"))
            if np.array_equal(rgba[..., :3], reference):
                hidden = float(np.mean(rgba[..., 3] < 255))
                findings.append(Finding("alpha-dropped", (
                    f"alpha channel dropped, not composited: pil's convert('RGB') keeps the colour stored under "
                    f"the {hidden:.1%} of pixels that are not opaque")))
        if img.mode.startswith("I;16"):
            raw = np.asarray(img)
            if np.array_equal(reference[..., 0], np.minimum(raw, 255)):
                findings.append(Finding("png16-clip", (
                    f"16-bit grayscale: pil's convert('RGB') clips samples above 255 instead of scaling them: "
                    f"{np.mean(raw > 255):.2%} of pixels become 255")))
    return findings


def pair_findings(path: Path, facts: ImageFacts, decoder: DecoderSpec, reference: np.ndarray, other: np.ndarray,
                  deltas: PixelDeltas | str) -> list[Finding]:
    """Why `decoder`'s pixels differ from PIL's, from what the two decodes show; empty when they agree."""
    name = decoder.name
    if isinstance(deltas, str):
        orientation = facts.exif_orientation
        if orientation in _ORIENTATION and _ORIENTATION[orientation][1](reference).shape == other.shape:
            return [Finding("exif-orientation", (
                f"EXIF orientation {orientation}: pil ignores it, {name} applies it "
                f"(shape {_size(reference)} vs {_size(other)})"))]
        return [Finding("shape-mismatch", deltas)]
    if deltas.px_max == 0:
        return []
    measured = f"max {deltas.px_max}, {deltas.px_frac_differ:.2%} of pixels differ"
    findings = []
    if facts.cmyk:
        findings.append(Finding("cmyk", f"CMYK JPEG: {name} converts CMYK to RGB differently from pil ({measured})"))
    if facts.bit_depth == 16:
        findings.append(Finding("png16", f"16-bit image: {name} maps 16-bit samples to 8 bits differently from pil "
                                         f"({_sixteen_bit_mapping(path, other)}; {measured})"))
    if decoder.flags.get("fastupsample") and facts.subsampling in ("4:2:0", "4:2:2"):
        findings.append(Finding("fast-upsample", f"fast (nearest-neighbour) upsampling of {facts.subsampling} "
                                                 f"chroma; pil upsamples smoothly ({measured})"))
    if facts.has_alpha and _composited_on_white(path, other):
        findings.append(Finding("alpha-composited", f"alpha channel: {name} composites transparent pixels onto "
                                                    f"white, pil drops the alpha ({measured})"))
    if decoder.flags.get("fastdct"):
        findings.append(Finding("fast-dct", f"fast integer DCT; pil uses the accurate integer DCT ({measured})"))
    return findings or [Finding("unexplained", f"{name} differs from pil with no known cause ({measured})")]


def explained(findings: list[Finding]) -> bool:
    """Whether some finding names a cause for a delta."""
    return any(f.name not in UNEXPLAINED for f in findings)


def _composited_on_white(path: Path, other: np.ndarray) -> bool:
    """Whether `other` is the image alpha-composited onto a white background (as vLLM's loader does)."""
    with Image.open(path) as img:
        rgba = img.convert("RGBA")
    white = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    expected = np.asarray(white).astype(int)
    return expected.shape == other.shape and int(np.abs(expected - other.astype(int)).max()) <= 1


def _sixteen_bit_mapping(path: Path, other: np.ndarray) -> str:
    with Image.open(path) as img:
        raw = np.asarray(img) if img.mode.startswith("I;16") else None
    if raw is not None and np.array_equal(other[..., 0], (raw >> 8).astype(np.uint8)):
        return "it keeps the high byte, pil clips at 255"
    return "the mapping is not pil's"


def _bit_depth(img: Image.Image, path: Path) -> int:
    with open(path, "rb") as f:
        head = f.read(25)
    if head.startswith(_PNG_SIGNATURE) and head[12:16] == b"IHDR":
        return head[24]
    if isinstance(img, JpegImagePlugin.JpegImageFile):
        return int(getattr(img, "bits", 8))
    return {"1": 1, "I": 32, "F": 32}.get(img.mode, 16 if img.mode.startswith("I;16") else 8)


def _subsampling(img: JpegImagePlugin.JpegImageFile) -> str | None:
    if img.mode == "L":
        return "gray"
    if img.mode == "CMYK":
        return None
    return _SUBSAMPLING.get(JpegImagePlugin.get_sampling(img), "other")


def _size(array: np.ndarray) -> str:
    return f"{array.shape[1]}x{array.shape[0]}"
