"""Generate the committed video clips in cases/videos/ (each a folder of PNG frames). Run by hand, once.

Needs only pillow and numpy; the outputs are committed and the harness never runs this.

    python cases/make_videos.py

| folder          | content                                             | frames | size (w x h) |
|-----------------|-----------------------------------------------------|--------|--------------|
| moving_circle   | a red disc crossing a blue field left to right      | 8      | 112 x 112    |
| astronaut_pan   | a window panning across images/astronaut_420.jpg    | 4      | 128 x 96     |
| growing_square  | a green square growing on white                     | 5      | 84 x 112     |
| circle_small    | moving_circle at 56 x 56                            | 8      | 56 x 56      |

Content changes from frame to frame on purpose: a bug that takes one frame for
all (or drops the temporal position) changes the answer. Frame counts differ
(8 and 4 fill Qwen2-VL's temporal patches of 2; 5 makes the processor pad the
last), and so do the sizes (square, wide, tall). circle_small has more temporal
patches (4) than merged patches on its longer side (2): where a video's time
extent, not its size, decides the position of the text after it.
"""
from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw

HERE = Path(__file__).resolve().parent
OUT = HERE / "videos"
PNG = {"optimize": True}


def moving_circle(n: int = 8, size: int = 112) -> list[Image.Image]:
    frames = []
    for t in range(n):
        image = Image.new("RGB", (size, size), (30, 60, 160))
        x = 10 + t * (size - 50) // (n - 1)
        ImageDraw.Draw(image).ellipse((x, 36, x + 40, 76), fill=(220, 30, 30))
        frames.append(image)
    return frames


def astronaut_pan(n: int = 4, size: tuple[int, int] = (128, 96)) -> list[Image.Image]:
    source = Image.open(HERE / "images" / "astronaut_420.jpg").convert("RGB")
    step = (source.width - size[0]) // (n - 1)
    return [source.crop((t * step, 60, t * step + size[0], 60 + size[1])) for t in range(n)]


def growing_square(n: int = 5, size: tuple[int, int] = (84, 112)) -> list[Image.Image]:
    frames = []
    for t in range(n):
        image = Image.new("RGB", size, (255, 255, 255))
        half = 6 + t * 8
        cx, cy = size[0] // 2, size[1] // 2
        ImageDraw.Draw(image).rectangle((cx - half, cy - half, cx + half, cy + half), fill=(30, 150, 60))
        frames.append(image)
    return frames


def main() -> None:
    for name, frames in {"moving_circle": moving_circle(), "astronaut_pan": astronaut_pan(),
                         "growing_square": growing_square(),
                         "circle_small": [f.resize((56, 56), Image.BICUBIC) for f in moving_circle()]}.items():
        folder = OUT / name
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob("*.png"):
            old.unlink()
        for t, frame in enumerate(frames):
            frame.save(folder / f"{t:03d}.png", **PNG)
        print(f"{folder.relative_to(HERE)}: {len(frames)} frames of {frames[0].size}")


if __name__ == "__main__":
    main()
