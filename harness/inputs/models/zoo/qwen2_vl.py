"""Qwen2-VL: a dynamic-resolution ViT (14 px patches, 2x2 merge) and M-RoPE positions; images and video.

The default model's architecture (its trained copy, `tiny-qwen2-vl-trained`, is built from this recipe's
tokenizer, processor and config). Images are resized to 56x56 to 112x112 pixels, so one image is 4 to 16
placeholder tokens.
"""
from __future__ import annotations

from harness.inputs.models.recipe import VOCAB, Part, Recipe, Template, tok

TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>",
          "<|image_pad|>", "<|video_pad|>")
TEMPLATE = Template(image="<|vision_start|><|image_pad|><|vision_end|>",
                    video="<|vision_start|><|video_pad|><|vision_end|>")
# The text model, M-RoPE sections over head_dim 64 (shared with Qwen2.5-VL).
TEXT = {
    "vocab_size": VOCAB, "hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2,
    "num_attention_heads": 2, "num_key_value_heads": 1, "max_position_embeddings": 4096,
    "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [8, 12, 12]},
    "bos_token_id": tok("<|endoftext|>"), "eos_token_id": tok("<|im_end|>"), "pad_token_id": tok("<|endoftext|>"),
}
# Small images keep the vision tower's work tiny: 56x56 to 112x112 pixels.
SIZE = {"shortest_edge": 56 * 56, "longest_edge": 112 * 112}

QWEN2_VL = Recipe(
    name="tiny-qwen2-vl",
    model="Qwen2VLForConditionalGeneration",
    description="Qwen2-VL: dynamic-resolution ViT with 2x2 patch merge, M-RoPE; video frames",
    tokens=TOKENS, bos="<|endoftext|>", eos="<|im_end|>", pad="<|endoftext|>", stops=("<|endoftext|>",),
    template=TEMPLATE,
    # The output head is untied and left as drawn (N(0, 0.08)): tied, the N(0, 1) embeddings would make
    # logits so large that float32 rounding dominates the comparison.
    config=Part("Qwen2VLConfig", {
        "text_config": TEXT,
        "vision_config": {"depth": 2, "embed_dim": 64, "hidden_size": 128, "num_heads": 1, "mlp_ratio": 4,
                          "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2},
        "image_token_id": tok("<|image_pad|>"), "video_token_id": tok("<|video_pad|>"),
        "vision_start_token_id": tok("<|vision_start|>"), "vision_end_token_id": tok("<|vision_end|>"),
        "tie_word_embeddings": False,
    }),
    processor=Part("Qwen2VLProcessor", {
        "image_processor": Part("Qwen2VLImageProcessor", {"size": SIZE, "patch_size": 14, "merge_size": 2}),
        "video_processor": Part("Qwen2VLVideoProcessor", {"size": SIZE, "patch_size": 14, "merge_size": 2}),
    }),
    # Only the vision tokens are never emitted (a generated placeholder would break re-scoring the sequence).
    emitted=("<|endoftext|>", "<|im_start|>", "<|im_end|>"),
    head_std=None,
    processor_options={"max_pixels": 56 * 56 * 2},  # the tiny models' default is 112 x 112
    # transformers 5.19 warns that the per-frame pixel cap becomes the default in 5.22; vLLM calls the same
    # processor: pinned, both sides cut the frames the same way.
    video_options={"cap_pixels_per_frame": False},
)

RECIPES = (QWEN2_VL,)
