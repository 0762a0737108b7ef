"""Pixel-delta statistics between two decodes of one image: pure functions, no I/O.

The issue's yardstick is nvJPEG vs PIL: 56.3% of pixels differ, max 29/255,
mean ~1. So the statistics are the ones that describe that shape: max, mean,
high percentiles (a few wrapped pixels can make max 255, so p99.9 too), the
share of pixels that differ, PSNR, a histogram, and a max-pooled map whose
single wrong pixel stays visible. They must cost no more than a PIL decode of
the same image, so the work streams over row chunks that stay in cache.
Statistics are numpy only; PIL just encodes the heatmap PNG in memory.
"""
from __future__ import annotations

import functools
import io
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

STAT_NAMES = ("px_max", "px_mean", "px_p99", "px_p999", "px_frac_differ", "psnr")
_CHUNK_ROWS = 16  # 16 rows of a 4000 px wide RGB image (192 kB) stay in L2; measured fastest of 8..256


@dataclass(frozen=True)
class PixelDeltas:
    """How far two same-shaped RGB decodes are apart; a delta is |a - b| of one channel value."""

    px_max: int
    px_mean: float  # mean delta over all channel values
    px_p99: int  # percentiles (nearest rank) of the per-pixel channel-max delta
    px_p999: int
    px_frac_differ: float  # share of pixels with any channel different
    psnr: float  # dB; inf when identical
    histogram: np.ndarray  # 256 counts of the per-pixel channel-max delta
    delta_map: np.ndarray  # per-pixel channel-max delta, max-pooled to the requested size

    def stats(self) -> dict[str, float | int]:
        return {name: getattr(self, name) for name in STAT_NAMES}


def pixel_deltas(a: np.ndarray, b: np.ndarray, max_side: int = 256) -> PixelDeltas | str:
    """Statistics of two HxWx3 uint8 arrays, or a finding (why they cannot be compared) if shapes differ."""
    if a.shape != b.shape:
        return f"shape mismatch: {_shape(a)} vs {_shape(b)}, pixels not comparable"
    if a.ndim != 3 or a.shape[2] != 3 or a.dtype != np.uint8 or b.dtype != np.uint8:
        raise ValueError(f"expected two HxWx3 uint8 arrays, got {a.shape} {a.dtype} and {b.shape} {b.dtype}")
    height, width = a.shape[:2]
    factor = pool_factor(height, width, max_side)
    rows = factor * max(1, _CHUNK_ROWS // factor)  # chunks hold whole pooling blocks
    ones = np.ones(rows * width * 3, np.float32)
    histogram = np.zeros(256, np.int64)
    total = total_sq = 0.0
    pooled_rows = []
    for top in range(0, height, rows):
        ca, cb = a[top:top + rows], b[top:top + rows]
        delta = np.subtract(ca, cb)  # uint8 wraps; the smaller of the two wraps is |a - b|
        np.minimum(delta, np.subtract(cb, ca), out=delta)
        if not delta.any():  # identical rows, the common case between bit-exact decoders
            histogram[0] += delta.shape[0] * width
            pooled_rows.append(np.zeros((-(-delta.shape[0] // factor), width), np.uint8))
            continue
        channel_max = np.maximum(np.maximum(delta[..., 0], delta[..., 1]), delta[..., 2])
        histogram += np.bincount(channel_max.ravel(), minlength=256)
        # BLAS dots in float32: exact for the sum while each accumulator stays below 2**24
        # (a 192 kB chunk is 49M at most, split over SIMD lanes); PSNR may lose its last digits.
        flat = delta.astype(np.float32).ravel()
        total += float(flat @ ones[:flat.size])
        total_sq += float(flat @ flat)
        pooled_rows.append(_pool_rows(channel_max, factor))
    pooled = _pool_rows(np.concatenate(pooled_rows).T, factor).T
    pixels = height * width
    return PixelDeltas(
        px_max=int(np.flatnonzero(histogram)[-1]),
        px_mean=total / (pixels * 3),
        px_p99=_percentile(histogram, 0.99),
        px_p999=_percentile(histogram, 0.999),
        px_frac_differ=1.0 - int(histogram[0]) / pixels,
        psnr=math.inf if total_sq == 0 else 10 * math.log10(255.0 ** 2 * pixels * 3 / total_sq),
        histogram=histogram,
        delta_map=np.ascontiguousarray(pooled),
    )


def pool_factor(height: int, width: int, max_side: int) -> int:
    """The smallest integer block size that brings the long side to at most `max_side`."""
    return max(1, -(-max(height, width) // max_side))


def max_pool(values: np.ndarray, max_side: int = 256) -> np.ndarray:
    """Downscale a 2-D map by block maxima: a single large value survives, where averaging would hide it."""
    factor = pool_factor(*values.shape, max_side)
    return np.ascontiguousarray(_pool_rows(_pool_rows(values, factor).T, factor).T)


def _pool_rows(values: np.ndarray, factor: int) -> np.ndarray:
    """Maxima of each block of `factor` rows (the last block may be shorter).

    reshape + max, not np.maximum.reduceat: reduceat over rows is ~30x slower.
    """
    full = len(values) // factor * factor
    pooled = values[:full].reshape(-1, factor, values.shape[1]).max(axis=1)
    if full == len(values):
        return pooled
    return np.concatenate([pooled, values[full:].max(axis=0, keepdims=True)])


# Heatmap colours by octave of the delta: 0 black, then dark red through red and orange to yellow.
# Octaves keep one-level differences visible and make the legend readable at a glance.
_BIN_EDGES = (1, 2, 4, 8, 16, 32, 64, 128)
_LEGEND_LABELS = ("0", "1", "2", "4", "8", "16", "32", "64", "128")


def _palette() -> list[int]:
    colours = [(0, 0, 0)]
    for k in range(1, len(_BIN_EDGES) + 1):
        t = 0.25 + 0.75 * (k - 1) / (len(_BIN_EDGES) - 1)  # dark red .. yellow
        colours.append((round(255 * min(1.0, 2 * t)), round(255 * max(0.0, 2 * t - 1)), 0))
    return [channel for colour in colours for channel in colour]


def heatmap_png(delta_map: np.ndarray) -> bytes:
    """A palette PNG of a delta map (as from `pixel_deltas`) with a labelled colour legend below it."""
    index = np.searchsorted(np.array(_BIN_EDGES), delta_map, side="right").astype(np.uint8)
    cell = 20
    legend_width = cell * len(_LEGEND_LABELS)
    height, width = index.shape
    canvas = np.zeros((height + 2 + 2 * cell, max(width, legend_width)), np.uint8)
    canvas[:height, :width] = index
    for k in range(len(_LEGEND_LABELS)):
        canvas[height + 2:height + 2 + cell, k * cell:(k + 1) * cell] = k
    img = Image.fromarray(canvas, "P")
    img.putpalette(_palette() + [255, 255, 255])  # index 9: label text
    draw = ImageDraw.Draw(img)
    font = _font()
    for k, label in enumerate(_LEGEND_LABELS):
        draw.text((k * cell + 1, height + 2 + cell + 2), label, fill=len(_LEGEND_LABELS), font=font)
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


@functools.cache
def _font() -> ImageFont.ImageFont:
    """PIL's bitmap font (no FreeType dependency); cached, loading it costs more than a heatmap."""
    return ImageFont.load_default_imagefont()


def _percentile(histogram: np.ndarray, q: float) -> int:
    """Nearest-rank percentile from counts (numpy's method="inverted_cdf")."""
    cumulative = np.cumsum(histogram)
    return int(np.searchsorted(cumulative, q * cumulative[-1], side="left"))


def _shape(array: np.ndarray) -> str:
    """Width x height, as image sizes are usually written."""
    return f"{array.shape[1]}x{array.shape[0]}"
