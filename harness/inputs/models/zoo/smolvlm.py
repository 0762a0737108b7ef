"""SmolVLM: 64 px tiles plus a downscaled global view, pixel shuffle, Llama (Idefics3's successor).

SmolVLM's own processor and model classes (`SmolVLMProcessor`, `SmolVLMForConditionalGeneration`), which
vLLM serves through its Idefics3 code: the image is resized to at most 128 pixels on its long side and cut
into 64x64 tiles plus the global view; each is encoded and pixel-shuffled 4x4 -> 2x2 (`scale_factor=2`):
4 image tokens per tile, each tile framed by `<fake_token_around_image><row_i_col_j>`, so a 448x448 image
is 2x2 tiles + the global view = 20 image tokens. SmolVLMProcessor needs the `num2words` package.

No video: vLLM 0.32's SmolVLM takes images only (the Idefics3 processing it inherits), so the config names
no video token and the video cases are skipped; the processor still needs a video processor to construct.
"""
from __future__ import annotations

from dataclasses import replace

from harness.inputs.models.recipe import Part
from harness.inputs.models.zoo.idefics3 import IDEFICS3, PATCH_SIZE, SCALE_FACTOR, TILE_SIZE

# Frames (were videos taken) are squared to the tile size, as SmolVLM's video processor does.
SIZES = {"size": {"longest_edge": 2 * TILE_SIZE}, "max_image_size": {"longest_edge": TILE_SIZE}}

# Idefics3's tokens, template, text and vision towers under SmolVLM's own classes.
SMOLVLM = replace(
    IDEFICS3,
    name="tiny-smolvlm",
    model="SmolVLMForConditionalGeneration",
    description="SmolVLM: 64 px tiles + global view, pixel shuffle (scale 2), Llama; SmolVLM's own processor",
    config=Part("SmolVLMConfig", IDEFICS3.config.kwargs),
    processor=Part("SmolVLMProcessor", {
        # Long side at most 128 pixels: up to 2x2 tiles of 64 plus the global view.
        "image_processor": Part("SmolVLMImageProcessor", SIZES),
        "video_processor": Part("SmolVLMVideoProcessor", SIZES),
        "image_seq_len": (TILE_SIZE // PATCH_SIZE) ** 2 // SCALE_FACTOR**2,
    }),
    image_embeds="vLLM 0.32's SmolVLM (Idefics3) processor rejects precomputed embeddings (measured)",
)

RECIPES = (SMOLVLM,)
