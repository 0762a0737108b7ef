"""Image checks at case-load time, so no engine ever sees a path or a file it should not.

A case's image path must stay inside the folder that holds its case file once
symlinks are resolved, and that is decided from the path alone (resolving it
reads links, never file contents) before anything is opened: a case file
cannot make the harness read `/etc/passwd` or block on a FIFO elsewhere. Then the file must decode with PIL, the reference decoder, whose
own limits keep a huge declared size from being decoded at all. The default
images decode in about 0.1 s together, so doing this once per load is cheap.
"""
from __future__ import annotations

import reprlib
import stat
import warnings
from pathlib import Path

from PIL import Image, UnidentifiedImageError

# What the reference's `convert("RGB")` maps to 8-bit RGB meaningfully (16-bit grayscale is clipped, and on
# record as a decode finding). Float, 32-bit integer and Lab pixels would come out clipped or reinterpreted.
SUPPORTED_MODES = ("1", "L", "LA", "P", "PA", "RGB", "RGBA", "CMYK", "YCbCr", "I;16", "I;16B", "I;16L")
_ITEM = reprlib.Repr()  # the path as written, whole unless absurdly long
_ITEM.maxstring = 400


def resolve_image(root: Path, item: str) -> tuple[Path | None, str | None]:
    """`item` (relative to `root`, which is resolved) as a real path, or why it is refused.

    `Path.resolve` reads symlinks and never opens the target, so a path that
    leaves `root`, directly, by `..` or through a symlink, is refused unopened.
    """
    try:
        path = (root / item).resolve()
    except (OSError, RuntimeError, ValueError) as exc:  # NUL bytes, symlink loops
        return None, f"{_ITEM.repr(item)}: not a usable path ({exc})"
    if not path.is_relative_to(root):
        return None, (f"{_ITEM.repr(item)} resolves to {path}, outside {root}, the folder of the case file: image "
                      "paths must stay inside it (symlinks are followed); move or copy the image into that folder")
    return path, None


def image_problem(path: Path) -> str | None:
    """Why the file at `path` (already inside the cases folder) cannot be a case image, or None."""
    try:
        info = path.stat()
    except FileNotFoundError:
        return f"file not found: {path}"
    except OSError as exc:
        return f"cannot read {path}: {exc.strerror}"
    if not stat.S_ISREG(info.st_mode):
        return f"{path} is not a regular file (a folder, FIFO or device)"
    if info.st_size == 0:
        return f"{path} is empty (0 bytes)"
    return _decode_problem(path)


def _decode_problem(path: Path) -> str | None:
    """Open (header only), check size and mode, then decode every pixel to find truncation."""
    limit = Image.MAX_IMAGE_PIXELS
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # reported below as a problem
        try:
            with Image.open(path) as img:
                width, height = img.size
                if limit is not None and width * height > limit:
                    return (f"{path}: declared size {width}x{height} = {width * height:,} pixels is over PIL's "
                            f"decompression-bomb limit of {limit:,} pixels; not decoded: use a smaller image")
                if img.mode not in SUPPORTED_MODES:
                    return (f"{path}: unsupported pixel mode {img.mode!r} in this {img.format}: the reference "
                            f"converts images to 8-bit RGB; save it in one of {', '.join(SUPPORTED_MODES)} "
                            "(an RGB or RGBA PNG is safest)")
                img.load()
        except Image.DecompressionBombError as exc:
            return f"{path}: declared size is over PIL's decompression-bomb limit; not decoded: {exc}"
        except UnidentifiedImageError:
            return _unidentified(path)
        except Exception as exc:  # any decoder failure on untrusted bytes is this case's problem, not the run's
            return f"{path}: image data is truncated or damaged ({type(exc).__name__}: {exc})"
    return None


def _unidentified(path: Path) -> str:
    """Say whether the file looks like an image format PIL knows (then its header is bad) or like none."""
    with open(path, "rb") as f:
        prefix = f.read(16)
    Image.init()
    formats = [name for name, (_, accept) in Image.OPEN.items()
               if accept is not None and (found := accept(prefix)) and not isinstance(found, str)]
    if formats:
        return (f"{path}: PIL recognises a {'/'.join(formats)} file but cannot read its header (zero width or "
                "height, an unsupported bit depth or colour type, or a damaged header)")
    return f"{path}: not an image (no image format PIL knows starts like this: {prefix[:8]!r})"

