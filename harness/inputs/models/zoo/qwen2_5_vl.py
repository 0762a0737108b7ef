"""Qwen2.5-VL: window attention in the vision tower (a SwiGLU, RMSNorm ViT), then full attention; images and video.

The vision tower's first block attends within windows of `window_size` pixels, its second over the whole
image (`fullatt_block_indexes`): the path where the patches are permuted into window order, attended per
window and permuted back. The real window is 112 px (4x4 merged tokens); here it is 56 px (2x2 merged
tokens) so that the small images this recipe makes (56x56 to 168x168 pixels, 4 to 36 placeholder tokens)
span up to 3x3 windows, and non-square or odd-sized grids leave partial windows at the edges. Video frames
are kept at 112 px or less (2x2 windows per frame pair) and take the temporal M-RoPE path through
`second_per_grid_ts`. Tokenizer, template and text model are Qwen2-VL's.
"""
from __future__ import annotations

from harness.inputs.models.recipe import Part, Recipe, tok
from harness.inputs.models.zoo.qwen2_vl import TEMPLATE, TEXT, TOKENS

# Images up to 168x168 (3x3 windows of 56 px); video frames up to 112x112 (each frame pair is one grid).
IMAGE_SIZE = {"shortest_edge": 56 * 56, "longest_edge": 168 * 168}
VIDEO_SIZE = {"shortest_edge": 56 * 56, "longest_edge": 112 * 112}

QWEN2_5_VL = Recipe(
    name="tiny-qwen2.5-vl",
    model="Qwen2_5_VLForConditionalGeneration",
    description="Qwen2.5-VL: window attention (56 px windows, images span up to 3x3) then full attention "
                "in a SwiGLU ViT, M-RoPE with second_per_grid_ts for video",
    tokens=TOKENS, bos="<|endoftext|>", eos="<|im_end|>", pad="<|endoftext|>", stops=("<|endoftext|>",),
    template=TEMPLATE,
    config=Part("Qwen2_5_VLConfig", {
        "text_config": TEXT,
        # Block 0 windowed, block 1 full. window_size is in pixels: 56 // patch 14 // merge 2 = 2 merged
        # tokens a side. tokens_per_second 24: bare frames are taken at 24 fps, so a frame pair (1/12 s)
        # advances the temporal position by 2.
        "vision_config": {
            "depth": 2, "hidden_size": 64, "intermediate_size": 128, "num_heads": 1, "out_hidden_size": 128,
            "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2,
            "window_size": 56, "fullatt_block_indexes": [1], "tokens_per_second": 24,
        },
        "image_token_id": tok("<|image_pad|>"), "video_token_id": tok("<|video_pad|>"),
        "vision_start_token_id": tok("<|vision_start|>"), "vision_end_token_id": tok("<|vision_end|>"),
        "tie_word_embeddings": False,
    }),
    processor=Part("Qwen2_5_VLProcessor", {
        "image_processor": Part("Qwen2VLImageProcessor", {"size": IMAGE_SIZE, "patch_size": 14, "merge_size": 2}),
        "video_processor": Part("Qwen2VLVideoProcessor", {"size": VIDEO_SIZE, "patch_size": 14, "merge_size": 2}),
    }),
    # Untied head drawn at 0.3: logits spread about sqrt(128) * 0.3 = 3.4 nats (peaky, float32 noise small).
    head_std=0.3,
    # At most 112x112: 4 to 16 tokens, still 2x2 windows, so the variant changes the windows too.
    processor_options={"max_pixels": 112 * 112},
    # transformers 5.19 warns that the per-frame pixel cap becomes the default in 5.22; pinned on both sides.
    video_options={"cap_pixels_per_frame": False},
)

RECIPES = (QWEN2_5_VL,)
