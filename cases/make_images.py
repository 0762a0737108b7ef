"""Generate the committed case images in cases/images/. Run by hand, once.

Needs scikit-image (for its bundled photographs) and pillow; neither this
script nor scikit-image is used by the harness at run time. The outputs are
committed, so re-running only matters when adding images; JPEG encoder or
font changes in a newer Pillow may change the bytes.

    python cases/make_images.py

Provenance of each file (photos from `skimage.data`, resized with LANCZOS):

| file                     | source                           | size      | format                          |
|--------------------------|----------------------------------|-----------|---------------------------------|
| astronaut_420.jpg        | skimage.data.astronaut()         | 256x256   | JPEG q90, 4:2:0                 |
| coffee_444.jpg           | skimage.data.coffee()            | 300x200   | JPEG q90, 4:4:4                 |
| chelsea.png              | skimage.data.chelsea()           | 226x150   | PNG                             |
| rocket_420.jpg           | skimage.data.rocket()            | 320x213   | JPEG q90, 4:2:0                 |
| gradient.png             | synthetic RGB gradient           | 112x84    | PNG                             |
| tall_stripes_420.jpg     | synthetic checker/stripes        | 60x200    | JPEG q90, 4:2:0                 |
| wide_bands.png           | synthetic colour bands           | 300x56    | PNG                             |
| text_420.jpg             | PIL default font, black on white | 240x120   | JPEG q90, 4:2:0                 |
| tiny.png                 | synthetic quadrants              | 28x28     | PNG                             |
| chelsea_progressive.jpg  | skimage.data.chelsea()           | 300x200   | JPEG q90, 4:2:0, progressive    |
| coffee_422.jpg           | skimage.data.coffee()            | 300x200   | JPEG q90, 4:2:2                 |
| camera_gray.jpg          | skimage.data.camera()            | 256x256   | JPEG q90, grayscale             |
| astronaut_cmyk.jpg       | skimage.data.astronaut(), CMYK   | 256x256   | JPEG q90, Adobe CMYK            |
| rocket_exif6.jpg         | skimage.data.rocket(), turned    | 213x320   | JPEG q90, 4:2:0, EXIF orient. 6 |
| chelsea_alpha.png        | skimage.data.chelsea() + alpha   | 240x160   | PNG RGBA, vignette alpha        |
| camera_16bit.png         | skimage.data.camera() x 257      | 256x256   | PNG 16-bit grayscale            |
| rocket_large_420.jpg     | skimage.data.rocket(), upscaled  | 4000x3000 | JPEG q85, 4:2:0, luma grain     |
| shapes_*.png, word_cat.png | harness.inputs.models.train_tiny       | 112x112   | PNG: scenes like the trained default's training data |

4:2:0 is where fast (nearest-neighbour) chroma upsampling, as in nvJPEG's
default, departs from PIL; 4:4:4 is the control where it should not. Text and
hard edges are where decoders disagree most. The last eight are awkward on
purpose, each in one way decoders are known to handle differently: how the
file is coded (progressive, 4:2:2, grayscale, CMYK), what it asks of the
viewer (EXIF orientation), or what RGB cannot hold (alpha, 16 bits), plus a
12-megapixel photo for decode and statistics timings.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont, JpegImagePlugin
from skimage import data

OUT = Path(__file__).resolve().parent / "images"
SUBSAMPLING = {"4:4:4": 0, "4:2:2": 1, "4:2:0": 2}  # Pillow's `subsampling` values
PNG = {"optimize": True}


def photo(array: np.ndarray, size: tuple[int, int]) -> Image.Image:
    return Image.fromarray(array).convert("RGB").resize(size, Image.LANCZOS)


def gradient(w: int, h: int) -> Image.Image:
    x = np.linspace(0, 255, w)[None, :].repeat(h, 0)
    y = np.linspace(0, 255, h)[:, None].repeat(w, 1)
    rgb = np.stack([x, y, 255 - (x + y) / 2], axis=-1)
    return Image.fromarray(rgb.round().astype(np.uint8))


def tall_stripes(w: int, h: int) -> Image.Image:
    """Red/blue checkerboard on top, green/white horizontal stripes below: saturated chroma edges."""
    yy, xx = np.mgrid[0:h, 0:w]
    rgb = np.zeros((h, w, 3), np.uint8)
    checker = ((yy // 10 + xx // 10) % 2).astype(bool)
    top = yy < h // 2
    rgb[top & checker] = (220, 30, 30)
    rgb[top & ~checker] = (30, 30, 220)
    stripe = (yy // 6) % 2 == 0
    rgb[~top & stripe] = (20, 160, 40)
    rgb[~top & ~stripe] = (250, 250, 250)
    return Image.fromarray(rgb)


def wide_bands(w: int, h: int) -> Image.Image:
    colours = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180)]
    xx = np.arange(w)
    idx = (xx * len(colours)) // w
    rgb = np.array(colours, np.uint8)[idx][None, :, :].repeat(h, 0)
    return Image.fromarray(rgb)


def text_image(w: int, h: int) -> Image.Image:
    img = Image.new("RGB", (w, h), "white")
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default_imagefont()  # bitmap font: no FreeType dependency
    lines = ["The quick brown fox", "jumps over the lazy dog.", "0123456789 ABCDEFG", "Parity test: decode me."]
    for i, line in enumerate(lines):
        draw.text((8, 10 + 26 * i), line, fill="black", font=font)
    return img


def tiny(w: int, h: int) -> Image.Image:
    yy, xx = np.mgrid[0:h, 0:w]
    rgb = np.zeros((h, w, 3), np.uint8)
    rgb[(yy < h // 2) & (xx < w // 2)] = (255, 0, 0)
    rgb[(yy < h // 2) & (xx >= w // 2)] = (0, 255, 0)
    rgb[(yy >= h // 2) & (xx < w // 2)] = (0, 0, 255)
    rgb[(yy >= h // 2) & (xx >= w // 2)] = (255, 255, 0)
    return Image.fromarray(rgb)


def cmyk(img: Image.Image) -> Image.Image:
    """CMYK with black generation (K = 255 - max(R, G, B)), like a print workflow, not Pillow's K = 0."""
    rgb = np.asarray(img, np.float64)
    k = 255 - rgb.max(axis=-1, keepdims=True)
    cmy = np.where(k < 255, (255 - rgb - k) * 255 / np.maximum(255 - k, 1), 0)
    values = np.concatenate([cmy, k], axis=-1).round().astype(np.uint8)
    return Image.frombytes("CMYK", img.size, values.tobytes())


def with_alpha(img: Image.Image) -> Image.Image:
    """A radial vignette in alpha: opaque centre, fully transparent corners, the colour kept underneath."""
    yy, xx = np.mgrid[0:img.height, 0:img.width]
    r = np.hypot((xx - img.width / 2) / (img.width / 2), (yy - img.height / 2) / (img.height / 2))
    alpha = np.clip((1.3 - r) / 0.6, 0, 1) * 255
    rgba = np.dstack([np.asarray(img), alpha.round().astype(np.uint8)])
    return Image.fromarray(rgba, "RGBA")


def sixteen_bit(gray: np.ndarray, size: tuple[int, int]) -> Image.Image:
    """Full-range 16-bit grayscale (v * 257), as a scanner or a medical or depth camera writes it."""
    img = Image.fromarray(gray).resize(size, Image.LANCZOS)
    return Image.fromarray(np.asarray(img).astype(np.uint16) * 257)


def large_photo(size: tuple[int, int]) -> Image.Image:
    """A 4:3 crop of the rocket upscaled to `size`, with seeded luma grain so it compresses like a camera photo."""
    src = data.rocket()
    height, width = src.shape[:2]
    crop = height * size[0] // size[1]
    left = (width - crop) // 2
    img = Image.fromarray(src[:, left:left + crop]).resize(size, Image.LANCZOS)
    grain = np.random.default_rng(0).normal(0, 2.0, (size[1], size[0], 1))
    return Image.fromarray(np.clip(np.asarray(img) + grain, 0, 255).round().astype(np.uint8))


def jpeg(subsampling: str | None, quality: int = 90, **options: Any) -> dict[str, Any]:
    """Pillow save options for a JPEG; `subsampling` None for grayscale and CMYK, which have none."""
    if subsampling is not None:
        options["subsampling"] = SUBSAMPLING[subsampling]
    return {"quality": quality, **options}


def exif_orientation(value: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = value
    return exif.tobytes()


IMAGES: dict[str, tuple[Image.Image, dict[str, Any]]] = {
    "astronaut_420.jpg": (photo(data.astronaut(), (256, 256)), jpeg("4:2:0")),
    "coffee_444.jpg": (photo(data.coffee(), (300, 200)), jpeg("4:4:4")),
    "chelsea.png": (photo(data.chelsea(), (226, 150)), PNG),
    "rocket_420.jpg": (photo(data.rocket(), (320, 213)), jpeg("4:2:0")),
    "gradient.png": (gradient(112, 84), PNG),
    "tall_stripes_420.jpg": (tall_stripes(60, 200), jpeg("4:2:0")),
    "wide_bands.png": (wide_bands(300, 56), PNG),
    "text_420.jpg": (text_image(240, 120), jpeg("4:2:0")),
    "tiny.png": (tiny(28, 28), PNG),
    "chelsea_progressive.jpg": (photo(data.chelsea(), (300, 200)), jpeg("4:2:0", progressive=True)),
    "coffee_422.jpg": (photo(data.coffee(), (300, 200)), jpeg("4:2:2")),
    "camera_gray.jpg": (Image.fromarray(data.camera()).resize((256, 256), Image.LANCZOS), jpeg(None)),
    "astronaut_cmyk.jpg": (cmyk(photo(data.astronaut(), (256, 256))), jpeg(None)),
    # Stored turned a quarter anticlockwise, as a camera held upright writes it; orientation 6 tells a
    # viewer to turn it back clockwise. PIL ignores the tag, so the model sees the rocket on its side.
    "rocket_exif6.jpg": (photo(data.rocket(), (320, 213)).transpose(Image.Transpose.ROTATE_90),
                         jpeg("4:2:0", exif=exif_orientation(6))),
    "chelsea_alpha.png": (with_alpha(photo(data.chelsea(), (240, 160))), PNG),
    "camera_16bit.png": (sixteen_bit(data.camera(), (256, 256)), PNG),
    "rocket_large_420.jpg": (large_photo((4000, 3000)), jpeg("4:2:0", quality=85)),
}


def save(name: str, img: Image.Image, options: dict[str, Any]) -> None:
    path = OUT / name
    img.save(path, **options)
    if "subsampling" in options:
        with Image.open(path) as check:
            assert JpegImagePlugin.get_sampling(check) == options["subsampling"], name


def main() -> None:
    from harness.inputs.models.train_tiny import make_case_images

    OUT.mkdir(exist_ok=True)
    for name, (img, options) in IMAGES.items():
        save(name, img, options)
        print(f"{name}: {img.width}x{img.height} {img.mode}, {(OUT / name).stat().st_size} bytes")
    for path in make_case_images(OUT):
        print(f"{path.name}: {path.stat().st_size} bytes")


if __name__ == "__main__":
    main()
