"""Models the harness can run without hub access, cached under a name that changes with the recipe.

A parity run must say exactly which weights it ran, and must never pick up a
half-written model, so the cache directory is named by the recipe hash, is
filled by an atomic rename, and can be fingerprinted file by file.

`MODELS` registers the built-in tiny models, one per architecture the harness
is checked on (declared in `zoo`, built by `recipe`); `resolve_model` turns a `--model` value (a registered name, a
path, a hub id, or nothing) into what the engines load. The recipes import
torch and transformers; this module imports them only when a model is built or
described, so `import harness.inputs.models` stays cheap.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable

from harness.inputs.models.recipe import Committed, Recipe
from harness.inputs.models.train_tiny import TRAINED
from harness.inputs.models.zoo import RECIPES

# The default: trained on synthetic images, so its greedy answers are readable and depend on the image.
DEFAULT_MODEL = "tiny-qwen2-vl-trained"


MODELS: dict[str, Recipe | Committed] = {recipe.name: recipe for recipe in (*RECIPES, TRAINED)}


def _cache_root() -> Path:
    """`$VLM_PARITY_CACHE`, else `~/.cache/vlm-parity`."""
    env = os.environ.get("VLM_PARITY_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "vlm-parity"


def _model_path(recipe: Recipe | Committed, cache_root: Path | None) -> Path:
    """Where the recipe's model lives in the cache, built or not."""
    root = Path(cache_root if cache_root is not None else _cache_root())
    return root / "models" / f"{recipe.name}-{recipe.recipe_hash()[:12]}"


def _recipe(name: str) -> Recipe | Committed:
    try:
        return MODELS[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; built-in models: {', '.join(MODELS)}") from None


def model_dir(name: str, cache_root: Path | None = None) -> Path:
    """The registered model `name` for its current recipe, built on first use.

    The directory is `<cache>/models/<name>-<recipe hash[:12]>`. It is built in
    a temporary sibling directory and renamed into place, so a killed build
    leaves only a hidden `.<name>-*` directory, never a half model under the
    real name. If another process wins the race, its (identical) copy is used.
    """
    recipe = _recipe(name)
    final = _model_path(recipe, cache_root)
    models_dir = final.parent
    if final.is_dir():
        return final
    models_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=models_dir))
    try:
        recipe.build(tmp)
        try:
            tmp.rename(final)
        except OSError:
            if not final.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def default_model_dir(cache_root: Path | None = None) -> Path:
    """The default model (`DEFAULT_MODEL`), built (or copied into the cache) on first use."""
    return model_dir(DEFAULT_MODEL, cache_root)


def resolve_model(spec: str | None, cache_root: Path | None = None) -> str:
    """What engines should load for a `--model` value.

    None is the default model's directory; a registered name (see `MODELS`) is
    its built directory (built now if need be), even if a file of that name
    exists; anything else (a local path, a hub id) is returned unchanged.
    """
    if spec is None:
        return str(default_model_dir(cache_root))
    if spec in MODELS:
        return str(model_dir(spec, cache_root))
    return spec


def _built_dir(name: str, cache_root: Path | None) -> Path | None:
    """The registered model's directory if it is already built, else None (builds nothing)."""
    path = _model_path(_recipe(name), cache_root)
    return path if path.is_dir() else None


def parameter_count(model: str | Path) -> int | None:
    """Parameters stored in a local model directory's safetensors files (tied weights once), or None.

    Read from the file headers, so nothing is loaded.
    """
    from safetensors import safe_open

    files = sorted(Path(model).glob("*.safetensors")) if Path(model).is_dir() else []
    if not files:
        return None
    total = 0
    for path in files:
        with safe_open(str(path), "pt") as f:
            for key in f.keys():
                count = 1
                for dim in f.get_slice(key).get_shape():
                    count *= dim
                total += count
    return total


def image_tokens(model: str | Path, size: tuple[int, int] = (448, 448)) -> int:
    """How many image placeholder tokens the model's processor gives one RGB image of `size` (width, height).

    The prompt is the processor's chat template for one user turn holding the
    image, so tile tags and separators are placed as in a real request.
    """
    from PIL import Image
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(str(model))
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe the image."}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    image = Image.new("RGB", size, (128, 96, 64))
    ids = processor(text=[text], images=[[image]], return_tensors="np")["input_ids"][0]
    return int((ids == image_token_id(model)).sum())


def architecture(model: str | Path) -> str | None:
    """The model class a local checkpoint's config names; None for a hub id."""
    config = Path(model) / "config.json"
    if not config.is_file():
        return None
    architectures = json.loads(config.read_text()).get("architectures") or [None]
    return architectures[0]


def _by_architecture(attribute: str) -> dict[str, Any]:
    """A recipe field per architecture (the first recipe of each), for any checkpoint of that architecture."""
    table: dict[str, Any] = {}
    for recipe in RECIPES:
        table.setdefault(recipe.model, getattr(recipe, attribute))
    return table


# Per-request options of each architecture's processor that change the image tokens, as engines take them
# per request (vLLM's `mm_processor_kwargs`) and the HF processor takes them per call: the processor-options
# variant sends them. An architecture with none (LLaVA: a fixed resize to the vision tower's size) is skipped.
PROCESSOR_OPTIONS: dict[str, dict[str, Any] | None] = _by_architecture("processor_options")
# Options every request with a video sends to both sides' processors, pinning what a library version would
# otherwise choose differently.
VIDEO_OPTIONS: dict[str, dict[str, Any]] = _by_architecture("video_options")
# Why precomputed image embeddings are not judged on an architecture (None: they are).
IMAGE_EMBEDS: dict[str, str | None] = _by_architecture("image_embeds")


def video_options(model: str | Path) -> dict[str, Any]:
    return dict(VIDEO_OPTIONS.get(architecture(model) or "", {}))


def processor_options(model: str | Path) -> dict[str, Any] | None:
    """The per-request processor options for this checkpoint's architecture, or None where it has none."""
    options = PROCESSOR_OPTIONS.get(architecture(model) or "")
    return dict(options) if options else None


def list_models(cache_root: Path | None = None, extra: Iterable[str] = (), build: bool = True) -> list[dict]:
    """One row per registered model, then one per `extra` model (a path or hub id: "user-supplied").

    Keys: name, architecture, parameters (stored parameter count), image_tokens_448
    (placeholder tokens for a 448x448 RGB image), kind ("built" or "user-supplied"),
    path (the model directory, or None where there is none). Registered models are
    built first unless `build` is False, in which case unbuilt ones get None for
    the figures that need the files.
    """
    rows = []
    for name, recipe in MODELS.items():
        path = model_dir(name, cache_root) if build else _built_dir(name, cache_root)
        rows.append({
            "name": name,
            "architecture": recipe.architecture,
            "parameters": parameter_count(path) if path else None,
            "image_tokens_448": image_tokens(path) if path else None,
            "kind": recipe.kind,
            "path": str(path) if path else None,
        })
    for spec in extra:
        local = Path(spec).is_dir()
        rows.append({
            "name": spec,
            "architecture": architecture(spec) if local else None,
            "parameters": parameter_count(spec) if local else None,
            "image_tokens_448": image_tokens(spec) if local else None,
            "kind": "user-supplied",
            "path": str(Path(spec).resolve()) if local else None,
        })
    return rows


def model_fingerprint(model_dir: Path) -> str:
    """sha256 over every file's relative path and content, in sorted order.

    Reports carry it so that two runs can be shown to have used the same weights,
    tokenizer and processor settings. A missing directory is an error rather
    than the hash of nothing, which would look like a real fingerprint.
    """
    h = hashlib.sha256()
    for name, digest in file_digests(model_dir).items():
        h.update(name.encode() + b"\0")
        h.update(digest)
    return h.hexdigest()


def file_digests(model_dir: Path) -> dict[str, bytes]:
    """sha256 of every file under `model_dir` by relative path, in sorted order (read in 1 MiB chunks)."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise FileNotFoundError(f"model directory not found: {model_dir}")
    digests = {}
    for path in sorted(p for p in model_dir.rglob("*") if p.is_file()):
        file_hash = hashlib.sha256()
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                file_hash.update(chunk)
        digests[path.relative_to(model_dir).as_posix()] = file_hash.digest()
    return digests


def video_token_id(model: str | Path) -> int | None:
    """The video placeholder token's id from a local checkpoint's config (Qwen2-VL's `video_token_id`;
    LLaVA-OneVision and LLaVA-NeXT-Video call it `video_token_index`)."""
    config_file = Path(model) / "config.json"
    raw = json.loads(config_file.read_text()) if config_file.is_file() else {}
    value = raw.get("video_token_id", raw.get("video_token_index"))
    return None if value is None else int(value)


def image_token_id(model: str | Path) -> int | None:
    """The id of the image placeholder token from the model's config, or None if it names none.

    Qwen2-VL calls it `image_token_id`; LLaVA-style configs call it `image_token_index`. A local
    checkpoint's config.json is read as JSON, so a stored-reference run need not import transformers.
    """
    config_file = Path(model) / "config.json"
    if config_file.is_file():
        raw = json.loads(config_file.read_text())
        value = raw.get("image_token_id", raw.get("image_token_index"))
        if value is not None:
            return int(value)
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(str(model))
    value = getattr(config, "image_token_id", None)
    value = getattr(config, "image_token_index", None) if value is None else value
    return None if value is None else int(value)

