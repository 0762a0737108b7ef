"""The decoders an engine might use, each registered with its library and flags.

PIL is the reference: HF processors are fed PIL images. The others are what
engines use instead: libjpeg-turbo through simplejpeg and OpenCV, torchvision
on CPU, and nvJPEG on the GPU. simplejpeg's fast flags stand in for nvJPEG on
a CPU-only machine (fast upsampling gives nvJPEG-like deltas at 4:2:0).
Libraries are imported inside each decoder, so a missing one only makes that
decoder unavailable.
"""
from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image

from harness.inputs.decode.registry import DecoderSpec, DecoderUnavailable, register


def _pil(path: Path) -> Image.Image:
    """PIL's default decode, converted to RGB the way HF processors expect (no EXIF transpose).

    The image carries pixels only: its metadata is dropped, because vLLM applies
    the EXIF orientation of a PIL image it is given and HF does not, so an EXIF
    tag left on would hand the two sides different pixels from one decode.
    """
    with Image.open(path) as img:
        img.load()
        rgb = img.convert("RGB")
    rgb.info.clear()
    return rgb


def _transformers(path: Path) -> Image.Image:
    """transformers' own loader (`image_utils.load_image`): what HF gets from a path or URL.
    It applies the EXIF orientation, unlike plain PIL, and drops alpha."""
    from transformers.image_utils import load_image

    image = load_image(str(path))
    image.info.clear()
    return image


def _simplejpeg(path: Path, fastdct: bool = False, fastupsample: bool = False) -> np.ndarray:
    import simplejpeg

    return simplejpeg.decode_jpeg(path.read_bytes(), colorspace="RGB", fastdct=fastdct, fastupsample=fastupsample)


def _opencv(path: Path) -> np.ndarray:
    import cv2

    bgr = cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError("cv2.imdecode could not decode the file")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _torchvision(path: Path, device: str = "cpu") -> np.ndarray:
    import torch
    from torchvision.io import ImageReadMode, decode_jpeg

    data = torch.frombuffer(bytearray(path.read_bytes()), dtype=torch.uint8)
    chw = decode_jpeg(data, mode=ImageReadMode.RGB, device=device)
    return chw.permute(1, 2, 0).contiguous().cpu().numpy()


def _nvjpeg(path: Path) -> np.ndarray:
    import torch

    if not torch.cuda.is_available():
        raise DecoderUnavailable("no CUDA device")
    return _torchvision(path, device="cuda")


register(DecoderSpec("pil", "PIL", _pil, {"convert": "RGB", "exif_orientation": "ignored"}))
register(DecoderSpec("transformers", "transformers", _transformers,
                     {"loader": "image_utils.load_image", "exif_orientation": "applied", "alpha": "dropped"}))
_SIMPLEJPEG = {"colorspace": "RGB", "fastdct": False, "fastupsample": False}
register(DecoderSpec("simplejpeg", "simplejpeg", _simplejpeg, _SIMPLEJPEG, jpeg_only=True))
register(DecoderSpec("simplejpeg-fastdct", "simplejpeg", partial(_simplejpeg, fastdct=True),
                     {**_SIMPLEJPEG, "fastdct": True}, jpeg_only=True))
register(DecoderSpec("simplejpeg-fastupsample", "simplejpeg", partial(_simplejpeg, fastupsample=True),
                     {**_SIMPLEJPEG, "fastupsample": True}, jpeg_only=True))
# OpenCV rotates by EXIF orientation unless IMREAD_IGNORE_ORIENTATION is given; PIL does not.
register(DecoderSpec("opencv", "cv2", _opencv, {"imread": "IMREAD_COLOR", "to_rgb": "COLOR_BGR2RGB",
                                                 "exif_orientation": "applied"}))
_TORCHVISION = {"mode": "RGB", "apply_exif_orientation": False}
register(DecoderSpec("torchvision", "torchvision", _torchvision, {**_TORCHVISION, "device": "cpu"}, jpeg_only=True))
register(DecoderSpec("nvjpeg", "torchvision", _nvjpeg, {**_TORCHVISION, "device": "cuda"}, jpeg_only=True))
