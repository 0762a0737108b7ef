"""Decode-path parity on the default cases' images (`pytest -m parity`), with tolerances from the config.

PIL is what the HF reference is fed, so an engine decoding with PIL must get
identical pixels, and decoders built on libjpeg-turbo's defaults must too,
unless a named finding says why not (EXIF orientation, CMYK, 16 bits). The
nvJPEG stand-in (fast chroma upsampling) must visibly differ on 4:2:0 photos.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from harness.config import Thresholds, load_config, resolve_section
from harness.decode_diff import compare_decoders
from harness.inputs.cases import load_cases
from harness.inputs.decode import availability
from harness.inputs.decode.facts import explained, image_facts

pytestmark = pytest.mark.parity

CASES = Path(__file__).resolve().parents[1] / "cases"
_LOADED = load_cases([CASES])
IMAGES = sorted({path for case in _LOADED.cases for path in case.images})
PHOTOS_420 = sorted({path for case in _LOADED.cases if "photo" in case.tags for path in case.images
                     if image_facts(path).subsampling == "4:2:0"})


@pytest.fixture(scope="module")
def limits() -> Thresholds:
    return resolve_section(load_config(), "decode")


def test_default_cases_have_images() -> None:
    assert _LOADED.problems == [] and len(IMAGES) >= 17 and PHOTOS_420


@pytest.mark.parametrize("image", IMAGES, ids=[p.name for p in IMAGES])
def test_pil_and_libjpeg_defaults_match_pil(image: Path, limits: Thresholds) -> None:
    decoders = ["pil", *limits["libjpeg_default_decoders"]]
    rows = {row.decoder: row for row in compare_decoders(image, decoders)}
    pil = rows.pop("pil")
    assert pil.status == "ok" and pil.deltas is not None, pil.status
    assert pil.deltas.px_max <= limits["same_decoder_px_max"], limits.reasons["same_decoder_px_max"]
    compared = 0
    for name, row in rows.items():
        if row.status.startswith(("unavailable", "not applicable")):
            continue
        assert row.status == "ok", f"{name}: {row.status}"
        compared += 1
        if row.deltas is not None and row.deltas.px_max <= limits["libjpeg_default_px_max"]:
            continue
        # A delta (or a shape change) is allowed only with a finding that names its cause.
        found = list(row.pair_findings)
        assert explained(found), (f"{name} differs from pil on {image.name} without an explanation: "
                                  f"{[str(f) for f in found]}; {limits.reasons['libjpeg_default_px_max']}")
    if availability("opencv").available:
        assert compared >= 1  # OpenCV reads JPEG and PNG alike


@pytest.mark.parametrize("image", PHOTOS_420, ids=[p.name for p in PHOTOS_420])
def test_fast_upsampling_differs_on_420_photos(image: Path, limits: Thresholds) -> None:
    if not availability("simplejpeg-fastupsample").available:
        pytest.skip(availability("simplejpeg-fastupsample").reason)
    [row] = compare_decoders(image, ["simplejpeg-fastupsample"])
    assert row.status == "ok" and row.deltas is not None, row.status
    assert row.deltas.px_max > 0
    assert row.deltas.px_frac_differ >= limits["fast_upsample_min_frac_differ"], \
        limits.reasons["fast_upsample_min_frac_differ"]
    assert [f.name for f in row.pair_findings] == ["fast-upsample"]


def test_exif_orientation_is_a_named_finding_not_a_silent_rotation() -> None:
    exif_images = [p for p in IMAGES if p.name == "rocket_exif6.jpg"]
    assert exif_images, "the default cases must keep an EXIF-oriented image"
    [pil, opencv] = compare_decoders(exif_images[0], ["pil", "opencv"])
    assert [f.name for f in pil.image_findings] == ["exif-orientation"]
    assert "pil ignores it" in pil.image_findings[0].detail
    if opencv.status.startswith("unavailable"):
        pytest.skip(opencv.status)
    assert opencv.deltas is None  # different shapes: no numbers, and no exception
    assert [f.name for f in opencv.pair_findings] == ["exif-orientation"]
    assert "opencv applies it" in opencv.pair_findings[0].detail
