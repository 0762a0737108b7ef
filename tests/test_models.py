"""The built-in tiny models: registry, cache, determinism, and that each is a usable, image-dependent model.

Every model is built once per session into a temporary cache (a few seconds
each); the HF checks run float32 on CPU. vLLM parity for these models is
measured outside the unit tests (it needs an engine start per model).
"""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from PIL import Image

from harness.inputs import models
from harness.inputs.models import (
    MODELS,
    default_model_dir,
    image_token_id,
    list_models,
    model_dir,
    model_fingerprint,
    resolve_model,
)
from tests.conftest import CASES

NAMES = list(MODELS)
KIND = {name: "trained" if name == "tiny-qwen2-vl-trained" else "built" for name in NAMES}
# The placeholder token each processor repeats per image feature.
PLACEHOLDER = {
    "tiny-qwen2-vl": "<|image_pad|>",
    "tiny-lfm2-vl": "<image>",
    "tiny-lfm2-vl-1head": "<image>",
    "tiny-llava": "<image>",
    "tiny-idefics3": "<image>",
    "tiny-qwen2-vl-trained": "<|image_pad|>",
    "tiny-gemma3": "<image_soft_token>",
    "tiny-qwen2.5-vl": "<|image_pad|>",
    "tiny-qwen3-vl": "<|image_pad|>",
    "tiny-qwen3-vl-moe": "<|image_pad|>",
    "tiny-llava-next": "<image>",
    "tiny-llava-onevision": "<image>",
    "tiny-internvl": "<IMG_CONTEXT>",
    "tiny-mistral3": "[IMG]",
    "tiny-llama4": "<|patch|>",
    "tiny-smolvlm": "<image>",
    "tiny-glm4v": "<|image|>",
    "tiny-cohere2-vision": "<|IMG_PATCH|>",
}
# Placeholders for one 448x448 image: Qwen2-VL 112x112 / 28^2; LFM2-VL 2x2 tiles of 4 plus a
# 16-token thumbnail; LLaVA 4x4 patches; Idefics3 2x2 tiles plus the global view, 4 each.
IMAGE_TOKENS_448 = {"tiny-qwen2-vl": 16, "tiny-lfm2-vl": 32, "tiny-lfm2-vl-1head": 32, "tiny-llava": 16,
                    "tiny-idefics3": 20, "tiny-qwen2-vl-trained": 16, "tiny-gemma3": 16, "tiny-qwen2.5-vl": 36,
                    "tiny-qwen3-vl": 36, "tiny-qwen3-vl-moe": 36, "tiny-llava-next": 88, "tiny-llava-onevision": 172,
                    "tiny-internvl": 80, "tiny-mistral3": 36, "tiny-llama4": 80, "tiny-smolvlm": 20, "tiny-glm4v": 25,
                    "tiny-cohere2-vision": 20}


@pytest.fixture(scope="session")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private cache with every registered model built in it."""
    root = tmp_path_factory.mktemp("model-cache")
    for name in MODELS:
        model_dir(name, root)
    return root


@pytest.fixture(scope="session")
def hf_models(cache: Path) -> dict:
    """name -> (processor, float32 model), loaded once."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    loaded = {}
    for name in MODELS:
        path = model_dir(name, cache)
        processor = AutoProcessor.from_pretrained(path)
        model = AutoModelForImageTextToText.from_pretrained(path, dtype=torch.float32).eval()
        loaded[name] = (processor, model)
    return loaded


def _image(name: str, size: tuple[int, int] | None = None) -> Image.Image:
    image = Image.open(CASES / "images" / name).convert("RGB")
    return image.resize(size) if size else image


@torch.no_grad()
def _logprobs(processor, model, image: Image.Image | None, question: str = "Describe the image."):
    content = ([{"type": "image"}] if image is not None else []) + [{"type": "text", "text": question}]
    text = processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True,
                                         tokenize=False)
    inputs = processor(text=[text], images=[[image]] if image is not None else None, return_tensors="pt")
    logits = model(**inputs).logits[0]
    return inputs["input_ids"][0], torch.log_softmax(logits.float(), dim=-1)


def test_registry_names_and_fields() -> None:
    assert set(MODELS) == set(PLACEHOLDER) == set(IMAGE_TOKENS_448)  # every model has its expectations here
    for name, recipe in MODELS.items():
        assert recipe.name == name and recipe.kind == KIND[name] and recipe.description
        assert recipe.architecture.endswith("ForConditionalGeneration")
    # One declaration, two builds: the LFM2-VL pair differs in the query heads only.
    heads = {name: MODELS[name].config.kwargs["text_config"]["num_attention_heads"]
             for name in ("tiny-lfm2-vl", "tiny-lfm2-vl-1head")}
    assert heads == {"tiny-lfm2-vl": 2, "tiny-lfm2-vl-1head": 1}


def test_cache_names_and_default_model(cache: Path) -> None:
    for name, recipe in MODELS.items():
        path = model_dir(name, cache)
        assert path == cache / "models" / f"{name}-{recipe.recipe_hash()[:12]}" and path.is_dir()
    # The two LFM2-VL builds share a module but not a hash.
    assert MODELS["tiny-lfm2-vl"].recipe_hash() != MODELS["tiny-lfm2-vl-1head"].recipe_hash()
    assert default_model_dir(cache) == model_dir("tiny-qwen2-vl-trained", cache)
    assert not [p for p in (cache / "models").iterdir() if p.name.startswith(".")]  # no build leftovers


def test_model_dir_reuses_the_cache_and_rejects_unknown_names(cache: Path, monkeypatch) -> None:
    recipe = MODELS["tiny-llava"]

    def no_rebuild(self, out_dir):
        raise AssertionError("rebuilt a cached model")

    monkeypatch.setattr(type(recipe), "build", no_rebuild)
    assert model_dir("tiny-llava", cache).is_dir()
    with pytest.raises(KeyError, match="tiny-llava"):  # the message lists the known names
        model_dir("tiny-nonesuch", cache)


def test_env_variable_picks_the_cache(cache: Path, monkeypatch) -> None:
    monkeypatch.setenv("VLM_PARITY_CACHE", str(cache))
    assert model_dir("tiny-idefics3") == model_dir("tiny-idefics3", cache)


@pytest.mark.parametrize("name", NAMES)
def test_builds_are_deterministic(name: str, cache: Path, tmp_path: Path) -> None:
    again = tmp_path / name
    MODELS[name].build(again)
    assert model_fingerprint(again) == model_fingerprint(model_dir(name, cache))


def test_weights_are_saved_in_the_layout_vllm_loads(cache: Path) -> None:
    from safetensors import safe_open

    def keys(name: str) -> list[str]:
        with safe_open(str(model_dir(name, cache) / "model.safetensors"), "pt") as f:
            return list(f.keys())

    lfm2 = keys("tiny-lfm2-vl")
    assert all(k.startswith("model.vision_tower.vision_model.") for k in lfm2 if "vision_tower" in k)
    assert not any("lm_head" in k for k in lfm2)  # tied: vLLM always ties LFM2's head
    llava = keys("tiny-llava")
    assert all(k.startswith("vision_tower.vision_model.") for k in llava if "vision_tower" in k)
    assert any(k.endswith("lm_head.weight") for k in llava) and any(k.endswith("lm_head.weight")
                                                                     for k in keys("tiny-idefics3"))


def test_image_token_id_names_each_models_placeholder(cache: Path, hf_models: dict) -> None:
    for name in NAMES:
        processor, _ = hf_models[name]
        expected = processor.tokenizer.convert_tokens_to_ids(PLACEHOLDER[name])
        assert image_token_id(model_dir(name, cache)) == expected


@pytest.mark.parametrize("name", NAMES)
def test_hf_runs_one_image_and_the_image_matters(name: str, hf_models: dict) -> None:
    processor, model = hf_models[name]
    size = (420, 315)  # same size for both images, so the prompts are the same length
    ids, first = _logprobs(processor, model, _image("astronaut_420.jpg", size))
    ids2, second = _logprobs(processor, model, _image("chelsea.png", size))
    placeholder = processor.tokenizer.convert_tokens_to_ids(PLACEHOLDER[name])
    assert torch.equal(ids, ids2) and int((ids == placeholder).sum()) > 0
    assert first.shape[0] == len(ids) and torch.isfinite(first).all()
    # Peaky, not near-uniform (-log(vocab), about -6.2), so greedy decoding is stable.
    assert first[-1].max() > -math.log(first.shape[-1]) + 2.0
    # Replacing the image moves the predictions after it (the question, the turn markers) by a clear margin.
    after_image = int((ids == placeholder).nonzero().max()) + 1
    assert (first[after_image:] - second[after_image:]).abs().max() > 0.5  # Qwen2-VL 0.97, the rest 4.7 to 17
    # Zeroed output rows: the image placeholder is never the greedy choice.
    assert int(first.argmax(-1).eq(placeholder).sum()) == 0


@pytest.mark.parametrize("name", NAMES)
def test_hf_runs_text_only(name: str, hf_models: dict) -> None:
    processor, model = hf_models[name]
    ids, logprobs = _logprobs(processor, model, None, "What colour is the car?")
    assert logprobs.shape[0] == len(ids) and torch.isfinite(logprobs).all()


def test_resolve_model(cache: Path, tmp_path: Path) -> None:
    assert resolve_model(None, cache) == str(default_model_dir(cache))
    for name in NAMES:
        assert resolve_model(name, cache) == str(model_dir(name, cache))
    assert resolve_model(str(tmp_path), cache) == str(tmp_path)
    assert resolve_model("Qwen/Qwen2-VL-2B-Instruct", cache) == "Qwen/Qwen2-VL-2B-Instruct"
    assert resolve_model("tiny-nonesuch", cache) == "tiny-nonesuch"  # not registered: a path or hub id


def test_list_models(cache: Path, tmp_path: Path) -> None:
    user = model_dir("tiny-llava", cache)
    rows = list_models(cache, extra=[str(user), "someone/some-hub-model"])
    assert [r["name"] for r in rows] == [*NAMES, str(user), "someone/some-hub-model"]
    for row in rows[: len(NAMES)]:
        assert set(row) == {"name", "architecture", "parameters", "image_tokens_448", "kind", "path"}
        assert row["kind"] == KIND[row["name"]] and row["architecture"] == MODELS[row["name"]].architecture
        assert row["path"] == str(model_dir(row["name"], cache))
        assert 300_000 < row["parameters"] < 2_000_000  # tiny: about 0.5 M, the MoE 1.1 M
        assert row["image_tokens_448"] == IMAGE_TOKENS_448[row["name"]]
    local, hub = rows[len(NAMES):]
    assert local["kind"] == hub["kind"] == "user-supplied"
    assert local["architecture"] == "LlavaForConditionalGeneration" and local["image_tokens_448"] == 16
    assert hub["path"] is None and hub["parameters"] is None
    # Listing without building reports unbuilt models with no path.
    empty = list_models(tmp_path / "empty-cache", build=False)
    assert [r["path"] for r in empty] == [None] * len(NAMES)
    assert not (tmp_path / "empty-cache" / "models").exists()


def test_import_is_cheap() -> None:
    import subprocess
    import sys

    code = "import sys, harness.inputs.models; print('transformers' in sys.modules, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
    assert models.DEFAULT_MODEL == "tiny-qwen2-vl-trained"
