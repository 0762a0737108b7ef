"""Models the harness can run without hub access, cached under a name that changes with the recipe.

A parity run must say exactly which weights it ran, and must never pick up a
half-written model, so the cache directory is named by the recipe hash, is
filled by an atomic rename, and can be fingerprinted file by file.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from harness.models import tiny_qwen2vl


def _cache_root() -> Path:
    """`$VLM_PARITY_CACHE`, else `~/.cache/vlm-parity`."""
    env = os.environ.get("VLM_PARITY_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "vlm-parity"


def default_model_dir(cache_root: Path | None = None) -> Path:
    """The tiny Qwen2-VL for the current recipe, built on first use.

    It is built in a temporary sibling directory and renamed into place, so a
    killed build leaves only a hidden `.tiny-qwen2vl-*` directory, never a
    half model under the real name. If another process wins the race, its
    (identical) copy is used.
    """
    models_dir = Path(cache_root if cache_root is not None else _cache_root()) / "models"
    final = models_dir / f"tiny-qwen2vl-{tiny_qwen2vl.recipe_hash()[:12]}"
    if final.is_dir():
        return final
    models_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=models_dir))
    try:
        tiny_qwen2vl.build(tmp)
        try:
            tmp.rename(final)
        except OSError:
            if not final.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def model_fingerprint(model_dir: Path) -> str:
    """sha256 over every file's relative path and content, in sorted order.

    Reports carry it so that two runs can be shown to have used the same weights,
    tokenizer and processor settings. A missing directory is an error rather
    than the hash of nothing, which would look like a real fingerprint.
    """
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise FileNotFoundError(f"model directory not found: {model_dir}")
    h = hashlib.sha256()
    for path in sorted(p for p in model_dir.rglob("*") if p.is_file()):
        file_hash = hashlib.sha256()
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                file_hash.update(chunk)
        h.update(path.relative_to(model_dir).as_posix().encode() + b"\0")
        h.update(file_hash.digest())
    return h.hexdigest()


def image_token_id(model: str | Path) -> int | None:
    """The id of the image placeholder token from the model's config, or None if it names none.

    Qwen2-VL calls it `image_token_id`; LLaVA-style configs call it `image_token_index`.
    """
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(str(model))
    value = getattr(config, "image_token_id", None)
    value = getattr(config, "image_token_index", None) if value is None else value
    return None if value is None else int(value)
