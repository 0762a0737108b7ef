"""Pixel-delta statistics must cost no more than a PIL decode of the same image.

On the 12-megapixel default case image: the median time of a PIL decode
(open, load, convert to RGB) against the median time of the statistics plus
the heatmap PNG for PIL vs simplejpeg-fastupsample (the nvJPEG stand-in, so
the deltas are not zero and nothing is skipped). Prints both and the ratio,
which must be at most 1.0; exits 1 if it is not.

    .venv/bin/python benchmarks/bench_decode.py [--repeats 15] [IMAGE]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

from harness.inputs.decode import availability, decode, decode_array
from harness.inputs.decode.deltas import heatmap_png, pixel_deltas

IMAGE = Path(__file__).resolve().parents[1] / "cases" / "images" / "rocket_large_420.jpg"
OTHER = "simplejpeg-fastupsample"


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up: imports, caches, page faults
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("image", nargs="?", type=Path, default=IMAGE)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args(argv)
    if not availability(OTHER).available:
        print(f"{OTHER} unavailable: {availability(OTHER).reason}", file=sys.stderr)
        return 2
    reference, other = decode_array(args.image), decode_array(args.image, OTHER)

    def stats_and_heatmap() -> None:
        heatmap_png(pixel_deltas(reference, other).delta_map)

    decode_ms = median_ms(lambda: decode(args.image), args.repeats)
    stats_ms = median_ms(stats_and_heatmap, args.repeats)
    deltas = pixel_deltas(reference, other)
    height, width = reference.shape[:2]
    print(f"image: {args.image.name} ({width}x{height}), {args.repeats} repeats, medians")
    print(f"pil decode:                   {decode_ms:7.1f} ms")
    print(f"stats + heatmap, pil vs other: {stats_ms:6.1f} ms  ({OTHER}: px_max {deltas.px_max}, "
          f"{deltas.px_frac_differ:.1%} of pixels differ)")
    ratio = stats_ms / decode_ms
    print(f"ratio: {ratio:.2f} (must be <= 1.0)")
    return 0 if ratio <= 1.0 else 1


if __name__ == "__main__":
    sys.exit(main())
