"""Precomputed image embeddings from the reference implementation's vision tower,
for the `embeddings` input form: an engine given these must match itself given
pixels (the precomputed-embeddings path of a real engine was off while raw
images were right)."""
from __future__ import annotations

from typing import Any

from PIL import Image


class VisionTower:
    """The HF model's image processor and vision tower, loaded once, float32 on CPU."""

    def __init__(self, model: str) -> None:
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        self._torch = torch
        self.processor = AutoProcessor.from_pretrained(model)
        self.model = AutoModelForImageTextToText.from_pretrained(model, dtype=torch.float32).eval()

    def embed(self, images: list[Image.Image]) -> dict[str, Any]:
        """`image_embeds` (all images' features, concatenated) plus the image processor's
        metadata the engine needs to place them (e.g. Qwen2-VL's `image_grid_thw`)."""
        inputs = dict(self.processor.image_processor(images=images, return_tensors="pt"))
        pixel_values = inputs.pop("pixel_values")
        with self._torch.inference_mode():
            features = self.model.get_image_features(pixel_values, **inputs)
        pooled = getattr(features, "pooler_output", features)
        embeds = self._torch.cat(list(pooled)) if isinstance(pooled, (list, tuple)) else pooled
        return {"image_embeds": embeds.float(), **inputs}
