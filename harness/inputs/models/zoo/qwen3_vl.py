"""Qwen3-VL: deepstack (vision features of early ViT blocks added into early text layers), interleaved M-RoPE.

The vision tower (16 px patches, 2x2 merge, learned position embeddings interpolated bilinearly to each
image's grid) hands the text model its final features plus one merged feature map per
`deepstack_visual_indexes` block; text layer i adds the i-th of them to the image tokens' hidden states.
Here blocks 0 and 1 of 3 feed text layers 0 and 1 of 3, so the last text layer takes none. The text model's
M-RoPE interleaves the t/h/w frequencies (`mrope_interleaved`, which vLLM reads from the config and
transformers always applies). Videos carry per-frame timestamps as text (`<0.0 seconds>`), computed from
the frames' fps (transformers assumes 24 for bare frames; the harness sends vLLM the same).

Images are 64x64 to 192x192 pixels (4 to 36 placeholder tokens); a video's frames share 96x96x8 pixels.
Tokenizer and template are Qwen2-VL's; the text model has head_dim 64 and q/k RMS norms.

The image processor normalizes with mean and std 0.5, as the published checkpoints do, not
Qwen2VLImageProcessor's CLIP defaults: vLLM 0.32 normalizes on the device by default for Qwen3-VL
(`mm_device_do_normalize`) with the image processor's values for video frames too, so a video processor
with other values (Qwen3VLVideoProcessor's 0.5) gives vLLM other video pixels than transformers (a vLLM
bug, hidden when the two agree: repro/vllm_qwen3_vl_video_normalize.py).
"""
from __future__ import annotations

from harness.inputs.models.recipe import VOCAB, Part, Recipe, tok
from harness.inputs.models.zoo.qwen2_vl import TEMPLATE, TOKENS

IMAGE_SIZE = {"shortest_edge": 64 * 64, "longest_edge": 192 * 192}
# Qwen3-VL's video size bounds the whole clip (frames x height x width).
VIDEO_SIZE = {"shortest_edge": 64 * 64 * 2, "longest_edge": 96 * 96 * 8}

TEXT = {
    "vocab_size": VOCAB, "hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 3,
    "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 64, "max_position_embeddings": 4096,
    # mrope_section covers head_dim / 2 = 32 frequencies; interleaved as in every Qwen3-VL checkpoint.
    "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [8, 12, 12],
                        "mrope_interleaved": True},
    "bos_token_id": tok("<|endoftext|>"), "eos_token_id": tok("<|im_end|>"), "pad_token_id": tok("<|endoftext|>"),
}
VISION = {
    "depth": 3, "hidden_size": 64, "intermediate_size": 128, "num_heads": 1, "out_hidden_size": 128,
    "patch_size": 16, "spatial_merge_size": 2, "temporal_patch_size": 2,
    # An 8x8 grid of learned positions, interpolated to each image's patch grid (never the same size here).
    "num_position_embeddings": 64,
    "deepstack_visual_indexes": [0, 1],
}


def qwen3_vl_recipe(name: str, model: str, description: str, config: str, text: dict, vision: dict,
                    image_embeds: str | None) -> Recipe:
    """A Qwen3-VL-family recipe (shared with Qwen3-VL-MoE, which differs in its text model)."""
    return Recipe(
        name=name, model=model, description=description,
        tokens=TOKENS, bos="<|endoftext|>", eos="<|im_end|>", pad="<|endoftext|>", stops=("<|endoftext|>",),
        template=TEMPLATE,
        config=Part(config, {
            "text_config": text, "vision_config": vision,
            "image_token_id": tok("<|image_pad|>"), "video_token_id": tok("<|video_pad|>"),
            "vision_start_token_id": tok("<|vision_start|>"), "vision_end_token_id": tok("<|vision_end|>"),
            "tie_word_embeddings": False,
        }),
        processor=Part("Qwen3VLProcessor", {
            # Mean and std 0.5, as in the published checkpoints and the video processor: vLLM 0.32 normalizes
            # video frames with the image processor's values (see the module docstring).
            "image_processor": Part("Qwen2VLImageProcessor", {"size": IMAGE_SIZE, "patch_size": 16, "merge_size": 2,
                                                              "image_mean": [0.5] * 3, "image_std": [0.5] * 3}),
            # Frames as given: transformers' default samples 2 fps out of the 24 fps it assumes for bare frames
            # (fewer than the clip's 4 to 8), vLLM's keeps them; pinned off on both sides.
            "video_processor": Part("Qwen3VLVideoProcessor", {"size": VIDEO_SIZE, "patch_size": 16, "merge_size": 2,
                                                              "do_sample_frames": False}),
        }),
        # Untied head drawn at 0.3: logits spread about sqrt(128) * 0.3 = 3.4 nats.
        head_std=0.3,
        # At most 128x128: 4 to 16 tokens.
        processor_options={"max_pixels": 128 * 128},
        video_options={"cap_pixels_per_frame": False, "do_sample_frames": False},
        image_embeds=image_embeds,
    )


# vLLM takes Qwen3-VL image embeddings only with the deepstack features concatenated to the final ones
# (hidden size out_hidden_size * (1 + levels)); the harness's VisionTower hands the final ones alone.
EMBEDS_WHY = ("vLLM's Qwen3-VL takes image embeddings only with the deepstack levels concatenated "
              "(width out_hidden_size x 3 here); the harness's VisionTower gives the final features alone")

QWEN3_VL = qwen3_vl_recipe(
    "tiny-qwen3-vl", "Qwen3VLForConditionalGeneration",
    "Qwen3-VL: deepstack (ViT blocks 0, 1 into text layers 0, 1), interleaved M-RoPE, interpolated learned "
    "ViT positions; video with text timestamps",
    "Qwen3VLConfig", TEXT, VISION, EMBEDS_WHY,
)

RECIPES = (QWEN3_VL,)
