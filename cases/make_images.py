"""Generate the committed case images in cases/images/. Run by hand, once.

Needs scikit-image (for its bundled photographs) and pillow; neither this
script nor scikit-image is used by the harness at run time. The outputs are
committed, so re-running only matters when adding images; JPEG encoder or
font changes in a newer Pillow may change the bytes.

    python cases/make_images.py

Provenance of each file (photos from `skimage.data`, resized with LANCZOS):

| file                  | source                     | size    | format                       |
|-----------------------|----------------------------|---------|------------------------------|
| astronaut_420.jpg     | skimage.data.astronaut()   | 256x256 | JPEG q90, 4:2:0              |
| coffee_444.jpg        | skimage.data.coffee()      | 300x200 | JPEG q90, 4:4:4              |
| chelsea.png           | skimage.data.chelsea()     | 226x150 | PNG                          |
| rocket_420.jpg        | skimage.data.rocket()      | 320x213 | JPEG q90, 4:2:0              |
| gradient.png          | synthetic RGB gradient     | 112x84  | PNG                          |
| tall_stripes_420.jpg  | synthetic checker/stripes  | 60x200  | JPEG q90, 4:2:0              |
| wide_bands.png        | synthetic colour bands     | 300x56  | PNG                          |
| text_420.jpg          | PIL default font, black on white | 240x120 | JPEG q90, 4:2:0        |
| tiny.png              | synthetic quadrants        | 28x28   | PNG                          |

4:2:0 is where fast (nearest-neighbour) chroma upsampling, as in nvJPEG's
default, departs from PIL; 4:4:4 is the control where it should not. Text and
hard edges are where decoders disagree most.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont, JpegImagePlugin
from skimage import data

OUT = Path(__file__).resolve().parent / "images"
SUBSAMPLING = {"420": 2, "444": 0}  # Pillow's `subsampling` values


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


IMAGES: dict[str, Image.Image] = {
    "astronaut_420.jpg": photo(data.astronaut(), (256, 256)),
    "coffee_444.jpg": photo(data.coffee(), (300, 200)),
    "chelsea.png": photo(data.chelsea(), (226, 150)),
    "rocket_420.jpg": photo(data.rocket(), (320, 213)),
    "gradient.png": gradient(112, 84),
    "tall_stripes_420.jpg": tall_stripes(60, 200),
    "wide_bands.png": wide_bands(300, 56),
    "text_420.jpg": text_image(240, 120),
    "tiny.png": tiny(28, 28),
}


def save(name: str, img: Image.Image) -> None:
    path = OUT / name
    if name.endswith(".jpg"):
        tag = name.rsplit("_", 1)[1].removesuffix(".jpg")
        img.save(path, quality=90, subsampling=SUBSAMPLING[tag])
        with Image.open(path) as check:
            assert JpegImagePlugin.get_sampling(check) == SUBSAMPLING[tag], name
    else:
        img.save(path, optimize=True)


def main() -> None:
    OUT.mkdir(exist_ok=True)
    for name, img in IMAGES.items():
        save(name, img)
        print(f"{name}: {img.width}x{img.height}, {(OUT / name).stat().st_size} bytes")


if __name__ == "__main__":
    main()
