"""LLaVA-NeXT: any-resolution tiling, a CLIP tower per tile, unpadding and the image-newline embedding.

The processor picks the grid pinpoint that best fits the image, resizes and pads it to that size, cuts it
into 64x64 tiles (the vision tower's input) and adds the whole image resized to one tile in front. The model
runs CLIP on every tile (16 patches of 16 px, CLS dropped), stitches the tiles' patch features into one
grid, crops away the rows or columns that were padding ("unpadding", so the token count depends on the
aspect ratio), and ends every grid row with the learned `image_newline` embedding. The pinpoints are the
hub checkpoints' (336/672/1008 px) scaled down to 64 px tiles, so case images get 2 to 4 tiles: a 448x448
image gives 88 image tokens (16 base + 8 rows of 8 + 8 newlines), a wide or tall image fewer.
"""
from __future__ import annotations

from harness.inputs.models.recipe import Part, Recipe, Template, tok
from harness.inputs.models.zoo.llava import LLAMA_TEXT, PATCH_SIZE, clip_vision

TILE = 64
# (height, width): 1x2, 2x1, 2x2, 1x3 and 3x1 tiles, as llava-v1.6's [[336, 672], ...] at 64 px a tile.
PINPOINTS = [[64, 128], [128, 64], [128, 128], [192, 64], [64, 192]]

LLAVA_NEXT = Recipe(
    name="tiny-llava-next",
    model="LlavaNextForConditionalGeneration",
    description="LLaVA-NeXT: any-resolution 64 px tiles (up to 2x2 or 1x3) + base image, CLIP, unpadding and "
                "image-newline tokens, Llama",
    tokens=("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>"),
    bos="<|endoftext|>", eos="<|im_end|>", pad="<|endoftext|>", stops=("<|endoftext|>",),
    template=Template(image="<image>\n"),  # ChatML with one `<image>` line per image part
    config=Part("LlavaNextConfig", {
        "text_config": LLAMA_TEXT,
        "vision_config": clip_vision(TILE),  # vLLM does not build the layer `vision_feature_layer=-2` skips
        "image_token_index": tok("<image>"), "image_grid_pinpoints": PINPOINTS,
        "image_seq_length": (TILE // PATCH_SIZE) ** 2,
        "vision_feature_select_strategy": "default", "vision_feature_layer": -2,
        "projector_hidden_act": "gelu", "tie_word_embeddings": False,
    }),
    processor=Part("LlavaNextProcessor", {
        # `size` is the base image's resize, `crop_size` the tile; the pinpoints must equal the config's
        # (the model un-tiles with the config's, the processor tiles with its own).
        "image_processor": Part("LlavaNextImageProcessor", {
            "size": {"shortest_edge": TILE}, "crop_size": {"height": TILE, "width": TILE},
            "image_grid_pinpoints": PINPOINTS}),
        "patch_size": PATCH_SIZE, "vision_feature_select_strategy": "default",
        "num_additional_image_tokens": 1,  # CLIP's CLS token, which the "default" strategy drops
    }),
    # Logits spread by about sqrt(128) * 0.3 = 3.4 nats: peaky, so greedy decoding does not flip on float32 noise.
    head_std=0.3,
    # transformers 5.19 saves CLIP without its `vision_model.` level, which vLLM 0.32 needs.
    renames=(("vision_tower.", "vision_tower.vision_model."),),
    # No per-request option changes the image tokens without breaking the model: the tiling grid
    # (`image_grid_pinpoints`) is read from the config when the tiles are stitched back.
    processor_options=None,
    # Measured: vLLM 0.32 takes one (rows, hidden) tensor per image (HF's packed `pooler_output`) and then
    # scores it exactly as the pixels, but not `VisionTower`'s {image_embeds, image_sizes} dict, and its
    # schema refuses images of different row counts in one batch (repro/vllm_llava_next_embeds_mixed_sizes.py).
    image_embeds="vLLM 0.32 takes LLaVA-NeXT embeddings only as one plain tensor per image (not the harness's "
                 "{image_embeds, image_sizes} dict) and refuses images of different token counts in one batch",
)

RECIPES = (LLAVA_NEXT,)
