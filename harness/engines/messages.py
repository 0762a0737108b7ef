"""A case as OpenAI-style chat messages: what every chat API (vLLM's LLM.chat, OpenAI-compatible
servers) takes for the "native" prompt form, images as data URLs in their place."""
from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

from harness.engines.base import Request
from harness.inputs.decode import decode_all


def image_parts(request: Request) -> list[dict[str, Any]]:
    """OpenAI-style image_url parts for the request's images: the original file bytes for
    the native form (the engine decodes them), lossless PNG of the harness's decode otherwise."""
    parts = []
    if request.image_input == "bytes":
        parts += [image_url_of(Path(path)) for path in request.images]
    else:
        for image in decode_all(request.images, request.decoder):
            buf = io.BytesIO()
            image.save(buf, format="PNG")
            parts.append(_data_url(buf.getvalue(), "image/png"))
    return [{"type": "image_url", "image_url": {"url": url}} for url in parts]


def chat_messages(request: Request) -> list[dict[str, Any]]:
    """The case's messages in OpenAI chat form, its images in order as image_url parts."""
    images = iter(image_parts(request))
    out = []
    for message in request.messages:
        content = [next(images) if part["type"] == "image" else {"type": "text", "text": part["text"]}
                   for part in message["content"]]
        out.append({"role": message["role"], "content": content})
    return out


def sampling_fields(request: Request, greedy_seed: int | None = None) -> dict[str, Any]:
    """OpenAI chat sampling fields: greedy (temperature 0, with `greedy_seed` if given) or the request's sampling."""
    if request.sampling is None:
        return {"temperature": 0.0} if greedy_seed is None else {"temperature": 0.0, "seed": greedy_seed}
    s = request.sampling
    return {"temperature": s.temperature, "top_p": s.top_p, "seed": s.seed, **({"top_k": s.top_k} if s.top_k else {})}


def penalty_fields(request: Request) -> dict[str, float]:
    """The request's penalties by the names vLLM (SamplingParams and its server) and SGLang (sampling params and
    its chat API) share; {} without penalties."""
    p = request.penalties
    return {} if p is None else {"presence_penalty": p.presence, "frequency_penalty": p.frequency,
                                 "repetition_penalty": p.repetition}


def image_url_of(path: Path) -> str:
    """A data URL of the file's own bytes: the engine decodes them itself."""
    data = path.read_bytes()
    return _data_url(data, _mime(data))


def _data_url(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def _mime(data: bytes) -> str:
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith(b"\x89PNG"):
        return "image/png"
    return "application/octet-stream"
