"""Decode path: pixel-delta statistics, image facts and findings, the decoder registry, decode-diff."""
from __future__ import annotations

import argparse
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from harness.decode_diff import (
    add_decode_diff_arguments,
    case_pixel_deltas,
    compare_decoders,
    decode_diff,
    run_decode_diff,
)
from harness.inputs.decode import (
    DECODERS,
    DecoderSpec,
    ImageDecodeError,
    NotApplicable,
    availability,
    decode,
    decode_all,
    decode_array,
    register,
)
from harness.inputs.decode.deltas import PixelDeltas, heatmap_png, max_pool, pixel_deltas
from harness.inputs.decode.facts import explained, image_facts

IMAGES = Path(__file__).resolve().parents[1] / "cases" / "images"


def stats(a: np.ndarray, b: np.ndarray, max_side: int = 256) -> PixelDeltas:
    result = pixel_deltas(a, b, max_side)
    assert isinstance(result, PixelDeltas), result
    return result


# --- deltas ---------------------------------------------------------------

def test_identical_arrays_have_zero_delta_and_infinite_psnr() -> None:
    a = np.random.default_rng(0).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    d = stats(a, a.copy())
    assert d.stats() == {"px_max": 0, "px_mean": 0.0, "px_p99": 0, "px_p999": 0, "px_frac_differ": 0.0,
                         "psnr": math.inf}
    assert d.histogram[0] == 37 * 53 and d.histogram.sum() == 37 * 53
    assert not d.delta_map.any()


def test_one_pixel_off_by_29() -> None:
    a = np.full((40, 50, 3), 100, np.uint8)
    b = a.copy()
    b[7, 11, 1] = 71  # below a: the uint8 wrap-around must not turn -29 into 227
    d = stats(a, b)
    n = 40 * 50
    assert (d.px_max, d.px_p99, d.px_p999) == (29, 0, 0)
    assert d.px_frac_differ == pytest.approx(1 / n)
    assert d.px_mean == pytest.approx(29 / (3 * n))
    assert d.psnr == pytest.approx(10 * math.log10(255 ** 2 * 3 * n / 29 ** 2))
    assert d.histogram[29] == 1 and d.histogram[0] == n - 1


def test_statistics_match_numpy_on_random_arrays() -> None:
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, (301, 517, 3), dtype=np.uint8)  # not a multiple of the chunk or the pool block
    noise = rng.integers(-40, 41, a.shape) * (rng.random(a.shape[:2]) < 0.3)[..., None]
    b = np.clip(a.astype(int) + noise, 0, 255).astype(np.uint8)
    d = stats(a, b)
    diff = np.abs(a.astype(int) - b)
    per_pixel = diff.max(axis=2)
    assert d.px_max == diff.max()
    assert d.px_mean == pytest.approx(diff.mean(), rel=1e-6)
    assert d.px_p99 == np.percentile(per_pixel, 99, method="inverted_cdf")
    assert d.px_p999 == np.percentile(per_pixel, 99.9, method="inverted_cdf")
    assert d.px_frac_differ == pytest.approx(np.mean(per_pixel > 0))
    assert d.psnr == pytest.approx(10 * np.log10(255 ** 2 / np.mean(diff ** 2.0)), rel=1e-6)
    assert np.array_equal(d.histogram, np.bincount(per_pixel.ravel(), minlength=256))
    assert np.array_equal(d.delta_map, max_pool(per_pixel.astype(np.uint8)))


def test_max_pool_keeps_a_single_wrong_pixel_visible() -> None:
    a = np.zeros((3000, 4000, 3), np.uint8)
    b = a.copy()
    b[1234, 3999, 2] = 29
    d = stats(a, b)
    assert max(d.delta_map.shape) <= 256 and d.delta_map.shape == (188, 250)
    assert d.delta_map.max() == 29 and np.count_nonzero(d.delta_map) == 1
    assert d.delta_map[1234 // 16, 3999 // 16] == 29
    values = np.zeros((10, 1000), np.uint8)
    values[9, 999] = 1
    pooled = max_pool(values, max_side=64)
    assert pooled.shape == (1, 63) and pooled[0, -1] == 1 and pooled.sum() == 1


def test_heatmap_is_a_png_with_black_for_zero_and_colour_for_a_delta() -> None:
    delta_map = np.zeros((50, 80), np.uint8)
    delta_map[10, 20] = 1
    delta_map[30, 60] = 200
    img = Image.open(io.BytesIO(heatmap_png(delta_map))).convert("RGB")
    assert img.width >= 80 and img.height > 50  # the legend sits below the map
    assert img.getpixel((0, 0)) == (0, 0, 0)
    one, big = img.getpixel((20, 10)), img.getpixel((60, 30))
    assert one != (0, 0, 0) and one[0] > 100  # one level off is still plainly red
    assert big[0] == 255 and big[1] > 200  # large deltas are yellow


def test_shape_mismatch_is_a_finding_not_an_exception() -> None:
    a = np.zeros((200, 300, 3), np.uint8)
    finding = pixel_deltas(a, np.zeros((300, 200, 3), np.uint8))
    assert isinstance(finding, str) and "shape mismatch" in finding and "300x200 vs 200x300" in finding


def test_non_rgb_uint8_input_is_a_caller_error() -> None:
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        pixel_deltas(np.zeros((4, 4, 3), np.float32), np.zeros((4, 4, 3), np.float32))


# --- facts and findings ---------------------------------------------------

@pytest.mark.parametrize(("name", "expected"), [
    ("astronaut_420.jpg", {"format": "JPEG", "subsampling": "4:2:0", "progressive": False, "exif_orientation": None}),
    ("coffee_444.jpg", {"subsampling": "4:4:4", "cmyk": False, "has_alpha": False}),
    ("chelsea_progressive.jpg", {"subsampling": "4:2:0", "progressive": True}),
    ("coffee_422.jpg", {"subsampling": "4:2:2", "progressive": False}),
    ("camera_gray.jpg", {"mode": "L", "subsampling": "gray", "bit_depth": 8}),
    ("astronaut_cmyk.jpg", {"mode": "CMYK", "cmyk": True, "subsampling": None}),
    ("rocket_exif6.jpg", {"exif_orientation": 6, "size": (213, 320)}),
    ("chelsea_alpha.png", {"format": "PNG", "mode": "RGBA", "has_alpha": True, "subsampling": None,
                           "progressive": None}),
    ("camera_16bit.png", {"mode": "I;16", "bit_depth": 16, "has_alpha": False}),
    ("rocket_large_420.jpg", {"size": (4000, 3000), "subsampling": "4:2:0"}),
    ("chelsea.png", {"format": "PNG", "mode": "RGB", "bit_depth": 8}),
])
def test_image_facts(name: str, expected: dict) -> None:
    facts = image_facts(IMAGES / name)
    assert {k: getattr(facts, k) for k in expected} == expected
    json.dumps(facts.as_dict())


@pytest.mark.parametrize(("name", "finding"), [
    ("rocket_exif6.jpg", "exif-orientation"),
    ("chelsea_alpha.png", "alpha-dropped"),
    ("camera_16bit.png", "png16-clip"),
    ("astronaut_420.jpg", None),
    ("astronaut_cmyk.jpg", None),
])
def test_image_findings_name_what_pil_does(name: str, finding: str | None) -> None:
    [row] = compare_decoders(IMAGES / name, ["pil"])
    assert [f.name for f in row.image_findings] == ([finding] if finding else [])
    assert row.pair_findings == ()  # pil against pil


def test_pair_findings_explain_what_each_decoder_does() -> None:
    exif, cmyk, sixteen, fast = (
        compare_decoders(IMAGES / "rocket_exif6.jpg", ["opencv"])[0],
        compare_decoders(IMAGES / "astronaut_cmyk.jpg", ["opencv"])[0],
        compare_decoders(IMAGES / "camera_16bit.png", ["opencv"])[0],
        compare_decoders(IMAGES / "astronaut_420.jpg", ["simplejpeg-fastupsample"])[0],
    )
    if exif.status.startswith("unavailable"):
        pytest.skip(exif.status)
    assert exif.deltas is None and [f.name for f in exif.pair_findings] == ["exif-orientation"]
    assert "pil ignores it, opencv applies it (shape 213x320 vs 320x213)" in exif.pair_findings[0].detail
    assert [f.name for f in cmyk.pair_findings] == ["cmyk"] and cmyk.differs
    assert [f.name for f in sixteen.pair_findings] == ["png16"]
    assert "keeps the high byte" in sixteen.pair_findings[0].detail
    assert [f.name for f in fast.pair_findings] == ["fast-upsample"] and explained(list(fast.pair_findings))


def test_an_unexplained_delta_says_so() -> None:
    path = IMAGES / "astronaut_420.jpg"
    spec = DecoderSpec("test-brightened", "numpy", lambda p: np.minimum(decode_array(p).astype(int) + 1, 255)
                       .astype(np.uint8))
    register(spec)
    try:
        [row] = compare_decoders(path, ["test-brightened"])
        assert [f.name for f in row.pair_findings] == ["unexplained"] and not explained(list(row.pair_findings))
    finally:
        del DECODERS["test-brightened"]
        availability.cache_clear()


# --- registry -------------------------------------------------------------

def test_unknown_decoder_is_an_error_naming_the_known_ones() -> None:
    with pytest.raises(ValueError, match="unknown decoder 'nope' .*opencv, pil"):
        decode(IMAGES / "tiny.png", "nope")
    with pytest.raises(ImageDecodeError, match=r"field 'images\[0\]'.*unknown decoder 'nope'"):
        decode_all([IMAGES / "tiny.png"], "nope")


def test_every_decoder_is_available_or_says_why() -> None:
    expected = {"pil", "simplejpeg", "simplejpeg-fastdct", "simplejpeg-fastupsample", "opencv", "torchvision", "nvjpeg"}
    assert expected <= set(DECODERS)
    for name in DECODERS:
        state = availability(name)
        assert state.available == (state.reason is None), (name, state)
    assert availability("pil").available


def test_torchvision_and_nvjpeg_report_the_real_reason() -> None:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        assert availability("nvjpeg").reason == "no CUDA device"
    state = availability("torchvision")
    if not state.available:  # here: a CUDA torchvision build whose image ops cannot load on CPU
        assert state.version is not None and state.reason.startswith(("RuntimeError", "OSError", "ImportError"))


@pytest.mark.parametrize("library", ["no_such_library_for_vlm_parity", "numpy"])
def test_a_decoder_that_cannot_import_or_run_is_unavailable_not_a_crash(library: str) -> None:
    def broken(path: Path) -> np.ndarray:
        raise RuntimeError("kernel image is not available")

    register(DecoderSpec("test-broken", library, broken))
    try:
        state = availability("test-broken")
        assert not state.available
        assert ("ModuleNotFoundError" if library != "numpy" else "RuntimeError: kernel image") in state.reason
        [row] = compare_decoders(IMAGES / "tiny.png", ["test-broken"])
        assert row.status == f"unavailable: {state.reason}" and row.deltas is None
        with pytest.raises(ImageDecodeError, match="test-broken is unavailable|'test-broken' is unavailable"):
            decode_all([IMAGES / "tiny.png"], "test-broken")
    finally:
        del DECODERS["test-broken"]
        availability.cache_clear()


def test_jpeg_only_decoders_do_not_apply_to_png() -> None:
    if not availability("simplejpeg").available:
        pytest.skip(availability("simplejpeg").reason)
    with pytest.raises(NotApplicable, match="not a JPEG"):
        decode_array(IMAGES / "chelsea.png", "simplejpeg")
    [row] = compare_decoders(IMAGES / "chelsea.png", ["simplejpeg"])
    assert row.status == "not applicable: not a JPEG"
    # On the engine path a JPEG-only decoder hands other formats to PIL.
    [engine_pixels] = decode_all([IMAGES / "chelsea.png"], "simplejpeg")
    assert np.array_equal(np.asarray(engine_pixels), decode_array(IMAGES / "chelsea.png", "pil"))


def test_pil_decode_hands_over_pixels_only() -> None:
    img = decode(IMAGES / "rocket_exif6.jpg")
    assert (img.mode, img.size, img.info) == ("RGB", (213, 320), {})
    assert img.getexif().get(0x0112) is None  # an engine cannot re-orient what it is given
    array = decode_array(IMAGES / "rocket_exif6.jpg")
    assert array.shape == (320, 213, 3) and array.dtype == np.uint8
    assert np.array_equal(array, np.asarray(img))


# --- decode-diff ------------------------------------------------------------

def test_decode_diff_rows_and_heatmaps(tmp_path: Path) -> None:
    rows = decode_diff([IMAGES / "astronaut_420.jpg", IMAGES / "tiny.png", tmp_path / "missing.png"],
                       ["pil", "simplejpeg-fastupsample"], tmp_path / "heat")
    by_key = {(r["image"], r["decoder"]): r for r in rows}
    assert len(rows) == 6
    assert by_key["astronaut_420.jpg", "pil"]["px_max"] == 0 and by_key["astronaut_420.jpg", "pil"]["heatmap"] is None
    if availability("simplejpeg-fastupsample").available:
        fast = by_key["astronaut_420.jpg", "simplejpeg-fastupsample"]
        assert fast["px_max"] > 0 and fast["flags"] == "colorspace=RGB fastdct=False fastupsample=True"
        assert Path(fast["heatmap"]).name == "astronaut_420.simplejpeg-fastupsample.png"
        assert Image.open(fast["heatmap"]).format == "PNG"
        assert by_key["tiny.png", "simplejpeg-fastupsample"]["status"] == "not applicable: not a JPEG"
    assert by_key["missing.png", "pil"]["status"].startswith("error: pil cannot decode: FileNotFoundError")
    assert by_key["missing.png", "pil"]["px_max"] is None


def test_case_pixel_deltas_is_strict_json_and_small() -> None:
    rows = case_pixel_deltas([IMAGES / "rocket_large_420.jpg", IMAGES / "chelsea.png"], "simplejpeg-fastupsample")
    text = json.dumps(rows, allow_nan=False)
    large, png = rows
    assert large["decoder"]["name"] == "simplejpeg-fastupsample" and large["facts"]["size"] == [4000, 3000]
    if large["status"] == "ok":
        assert large["stats"]["px_max"] > 0 and large["heatmap"].startswith("data:image/png;base64,")
        assert len(large["heatmap"]) < 20_000
        assert [f["name"] for f in large["findings"]] == ["fast-upsample"]
    assert png["status"] == "not applicable: not a JPEG" and png["stats"] is None
    assert len(text) < 40_000
    [same] = case_pixel_deltas([IMAGES / "chelsea.png"], "pil")
    assert same["stats"]["psnr"] is None and same["heatmap"] is None  # identical: no PSNR, nothing to draw


def test_run_decode_diff_prints_tables(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    add_decode_diff_arguments(parser)
    args = parser.parse_args([str(IMAGES / "rocket_exif6.jpg"), "--decoders", "pil,opencv,nvjpeg",
                              "--out", str(tmp_path)])
    assert run_decode_diff(args) == 0
    out = capsys.readouterr().out
    assert "Decoders (each compared with pil)" in out and "Pixel deltas vs pil" in out
    assert "exif-orientation: EXIF orientation 6" in out
    assert availability("nvjpeg").available or "unavailable" in out
    assert run_decode_diff(parser.parse_args([str(IMAGES / "tiny.png"), "--decoders", "pil,nope"])) == 2
    assert "unknown decoder(s): nope" in capsys.readouterr().err
