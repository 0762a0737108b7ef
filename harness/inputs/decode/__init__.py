"""Image decoders in a registry: the decode path is part of what parity tests.

PIL is the reference decoder (it is what HF processors are fed). `registry`
describes and runs decoders, `decoders` registers the known ones, `deltas`
measures how far two decodes differ, `facts` says what is awkward about an
image, and `diff` puts these together for the CLI and the runner.
"""
from __future__ import annotations

from harness.inputs.decode import decoders as _decoders  # noqa: F401 - registers the decoders
from harness.inputs.decode.registry import (
    DECODERS,
    Availability,
    DecoderSpec,
    DecoderUnavailable,
    ImageDecodeError,
    NotApplicable,
    availability,
    decode,
    decode_all,
    decode_array,
    decode_videos,
    get_decoder,
    register,
    same_pixels,
)

__all__ = [
    "DECODERS", "Availability", "DecoderSpec", "DecoderUnavailable", "ImageDecodeError", "NotApplicable",
    "availability", "decode", "decode_all", "decode_array", "decode_videos", "get_decoder", "register", "same_pixels",
]
