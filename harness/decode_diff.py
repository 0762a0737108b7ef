"""Every decoder against PIL on given images: the `decode-diff` command and the runner's per-case deltas.

A decoder that cannot run here, or does not handle the file, is a row that
says so; a file that cannot be decoded at all is a row with the error. Nothing
here raises on bad input, so one odd image never hides the others.
"""
from __future__ import annotations

import argparse
import base64
import math
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.inputs.decode.deltas import STAT_NAMES, PixelDeltas, heatmap_png, pixel_deltas
from harness.inputs.decode.facts import Finding, ImageFacts, image_facts, image_findings, pair_findings
from harness.inputs.decode.registry import (
    DECODERS,
    DecoderSpec,
    NotApplicable,
    availability,
    decode_array,
    get_decoder,
    register,
)

if TYPE_CHECKING:
    import pandas as pd

REFERENCE = "pil"


@dataclass(frozen=True)
class DecodeDelta:
    """One image decoded by one decoder, compared with PIL's decode of it."""

    image: Path
    decoder: str
    status: str  # "ok", "unavailable: ...", "not applicable: ...", "error: ..."
    facts: ImageFacts | None
    deltas: PixelDeltas | None
    image_findings: tuple[Finding, ...] = ()
    pair_findings: tuple[Finding, ...] = ()

    @property
    def findings(self) -> tuple[Finding, ...]:
        return self.image_findings + self.pair_findings

    @property
    def differs(self) -> bool:
        return self.deltas is not None and self.deltas.px_max > 0

    def decoder_info(self) -> dict[str, Any]:
        spec, state = get_decoder(self.decoder), availability(self.decoder)
        return {"name": spec.name, "library": spec.library, "version": state.version, "flags": dict(spec.flags)}

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe: psnr is null when the pixels are identical; the heatmap is a PNG data URL, only if they differ."""
        stats = None
        if self.deltas is not None:
            stats = self.deltas.stats()
            stats["psnr"] = None if math.isinf(stats["psnr"]) else stats["psnr"]
        heatmap = None
        if self.differs:
            heatmap = "data:image/png;base64," + base64.b64encode(heatmap_png(self.deltas.delta_map)).decode()
        return {"image": str(self.image), "decoder": self.decoder_info(), "reference": REFERENCE,
                "status": self.status, "facts": self.facts.as_dict() if self.facts else None, "stats": stats,
                "findings": [{"name": f.name, "detail": f.detail} for f in self.findings], "heatmap": heatmap}


def compare_decoders(path: Path, decoders: Sequence[str], max_side: int = 256) -> list[DecodeDelta]:
    """Decode `path` with PIL and with each decoder, and compare; one DecodeDelta per decoder."""
    path = Path(path)
    try:
        facts = image_facts(path)
        reference = decode_array(path, REFERENCE)
    except Exception as exc:  # not an image, unreadable: every row says so
        return [DecodeDelta(path, name, f"error: {REFERENCE} cannot decode: {type(exc).__name__}: {exc}", None, None)
                for name in decoders]
    seen = tuple(image_findings(path, facts, reference))
    rows = []
    for name in decoders:
        state = availability(name)
        if not state.available:
            rows.append(DecodeDelta(path, name, f"unavailable: {state.reason}", facts, None, seen))
            continue
        try:
            other = decode_array(path, name)
        except NotApplicable as exc:
            rows.append(DecodeDelta(path, name, f"not applicable: {exc}", facts, None, seen))
            continue
        except Exception as exc:  # a decoder failing on one file is that row's result
            rows.append(DecodeDelta(path, name, f"error: {type(exc).__name__}: {exc}", facts, None, seen))
            continue
        deltas = pixel_deltas(reference, other, max_side)
        found = tuple(pair_findings(path, facts, get_decoder(name), reference, other, deltas))
        rows.append(DecodeDelta(path, name, "ok", facts, None if isinstance(deltas, str) else deltas, seen, found))
    return rows


def case_pixel_deltas(paths: Sequence[str | Path], decoder: str, max_side: int = 128) -> list[dict[str, Any]]:
    """For the runner: one JSON-safe dict per case image, `decoder` vs PIL (heatmap small enough to embed)."""
    get_decoder(decoder)
    return [row.to_dict() for path in paths for row in compare_decoders(Path(path), [decoder], max_side)]


def decode_diff(paths: Sequence[str | Path], decoders: Sequence[str] | None = None,
                heatmap_dir: Path | None = None) -> list[dict[str, Any]]:
    """Flat rows, image x decoder vs PIL, for a table; writes a heatmap PNG per differing pair into `heatmap_dir`."""
    names = list(decoders) if decoders else list(DECODERS)
    for name in names:
        get_decoder(name)
    rows = []
    for path in paths:
        for delta in compare_decoders(Path(path), names):
            heatmap = None
            if heatmap_dir is not None and delta.differs:
                heatmap_dir.mkdir(parents=True, exist_ok=True)
                heatmap = heatmap_dir / f"{delta.image.stem}.{delta.decoder}.png"
                heatmap.write_bytes(heatmap_png(delta.deltas.delta_map))
            rows.append(_flat_row(delta, heatmap))
    return rows


def _flat_row(delta: DecodeDelta, heatmap: Path | None) -> dict[str, Any]:
    info = delta.decoder_info()
    stats = delta.deltas.stats() if delta.deltas else dict.fromkeys(STAT_NAMES)
    return {
        "image": delta.image.name, "decoder": info["name"], "library": info["library"], "version": info["version"],
        "flags": " ".join(f"{k}={v}" for k, v in info["flags"].items()), "status": delta.status, **stats,
        "facts": delta.facts.summary() if delta.facts else "",
        "image_findings": [str(f) for f in delta.image_findings],
        "findings": [str(f) for f in delta.pair_findings],
        "heatmap": str(heatmap) if heatmap else None,
    }


def add_decode_diff_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="+", type=Path, metavar="IMAGE")
    parser.add_argument("--decoders", default=None,
                        help=f"comma-separated, compared with pil (default: all: {','.join(DECODERS)})")
    parser.add_argument("--out", type=Path, default=None,
                        help="folder for heatmap PNGs, one per image and differing decoder (default: none written)")
    parser.add_argument("--engine", action="append", default=[], metavar="NAME",
                        help="also compare this engine's own image loader (what its native form decodes with), "
                             "as decoder NAME-loader (repeatable)")


def run_decode_diff(args: argparse.Namespace) -> int:
    """Print decoders, image facts and the delta table; 2 if a decoder name is unknown, else 0."""
    names = [n.strip() for n in args.decoders.split(",") if n.strip()] if args.decoders else list(DECODERS)
    for engine in args.engine:
        try:
            names.append(register_engine_loader(engine))
        except ValueError as exc:
            print(f"decode-diff: {exc}", file=sys.stderr)
            return 2
    unknown = [n for n in names if n not in DECODERS]
    if unknown:
        print(f"unknown decoder(s): {', '.join(unknown)} (known: {', '.join(DECODERS)})", file=sys.stderr)
        return 2
    rows = decode_diff(args.images, names, args.out)
    print(format_tables(rows))
    if args.out is not None:
        print(f"\nheatmaps: {args.out}")
    return 0


def register_engine_loader(engine: str) -> str:
    """Register an engine's own image loader as the decoder `<engine>-loader`; returns its name."""
    from harness import __version__
    from harness.engines import resolve_engine

    cls = resolve_engine(engine)
    loader = cls.image_loader()
    if loader is None:
        raise ValueError(f"engine {engine!r} does not decode images itself (no image_loader)")
    name = f"{engine}-loader"
    register(DecoderSpec(name, "harness", loader, {"engine": engine, "engine_version": cls.version(),
                                                   "harness": __version__}))
    return name


def format_tables(rows: list[dict[str, Any]]) -> str:
    """Three tables: the decoders (version, flags, availability), the images (facts, findings), the deltas."""
    import pandas as pd  # only the decode-diff command prints tables; a run imports this module for its deltas

    frame = pd.DataFrame(rows)
    decoders = frame.drop_duplicates("decoder")[["decoder", "library", "version", "flags"]].copy()
    decoders["available"] = [availability(n).reason or "yes" for n in decoders["decoder"]]
    images = frame.drop_duplicates("image")[["image", "facts", "image_findings"]].copy()
    images["image_findings"] = images["image_findings"].map(lambda f: "; ".join(f) or "-")
    deltas = frame[["image", "decoder", *STAT_NAMES]].copy()
    deltas["status / findings"] = [_status(s, f) for s, f in zip(frame["status"], frame["findings"])]
    formats = {"px_max": "{:.0f}", "px_mean": "{:.4f}", "px_p99": "{:.0f}", "px_p999": "{:.0f}",
               "px_frac_differ": "{:.2%}", "psnr": "{:.2f}"}
    for column, fmt in formats.items():
        deltas[column] = [fmt.format(v) if v is not None and v == v else "-" for v in deltas[column]]
    tables = "\n\n".join([
        "Decoders (each compared with pil)\n" + _left(decoders).to_string(index=False, justify="left"),
        "Images\n" + _left(images).to_string(index=False, justify="left"),
        "Pixel deltas vs pil\n" + _left(deltas, skip=formats.keys()).to_string(index=False, justify="left"),
    ])
    return "\n".join(line.rstrip() for line in tables.splitlines())


def _status(status: str, findings: list[str]) -> str:
    """The findings of a compared pair; unavailable decoders are explained once, in the decoders table."""
    if status == "ok":
        return "; ".join(findings) or "ok"
    return "unavailable" if status.startswith("unavailable") else status


def _left(frame: pd.DataFrame, skip: Iterable[str] = ()) -> pd.DataFrame:
    """Left-align text columns (pandas right-aligns strings, unreadable for long findings)."""
    frame = frame.copy()
    for column in frame.columns:
        if column not in skip:
            values = frame[column].astype(str)
            frame[column] = values.str.ljust(values.str.len().max())
    return frame
