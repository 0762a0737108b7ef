"""Llama 4: tiles + a global image, unfolded-patch ViT with 2-D RoPE, pixel shuffle, MoE text layers with
chunked local attention interleaved with global NoPE layers (iRoPE).

The image processor picks the grid of up to 4 64x64 tiles that best fits the image (never upscaling more
than needed), cuts it and, when there is more than one tile, adds the whole image resized to one tile
(the global view, after `<|tile_y_separator|>` and `<|image|>`); tiles in a row are separated by
`<|tile_x_separator|>`. Each tile is 8x8 patches of 8 px, pixel-shuffled to 4x4 and projected: 16
`<|patch|>` tokens a tile. A 448x448 image is 2x2 tiles + global = 80 image tokens.

Text: layer 0 is RoPE + chunked local attention (64-token chunks, so the cases' 30 to 300 token prompts
cross chunk boundaries) with QK norm and a dense MLP; layer 1 is a global NoPE layer with a 4-expert
top-1 MoE plus the shared expert. The vision MLP's width is 4x its hidden size because the pixel
shuffle's output (4x the channels) feeds the projector's first layer, which has that input size.
Pixels are rescaled to [0, 1] but not normalized: with both steps on, Llama4ImageProcessor does them in
bfloat16 (as the original code) and returns bfloat16 pixel values, which transformers' float32 model does
not cast and rejects (`expected m1 and m2 to have the same dtype`, repro/transformers_llama4_bf16_pixels.py);
rescaling alone stays float32. Temperature tuning of the NoPE layer is off: vLLM turns it off below 32k tokens of context, and it is
the identity below 8k positions anyway.

vLLM 0.32 CPU fails an encoder batch of exactly one tile (an image that fits one tile, encoded alone):
its patch embedding hands oneDNN a non-contiguous view (repro/vllm_cpu_llama4_one_tile_stride.py); the
`tiny-png` case shows it under prefix-cache and chunked-prefill.
"""
from __future__ import annotations

from harness.inputs.models.recipe import VOCAB, Part, Recipe, Template, tok

TILE = 64
PATCH_SIZE = 8
VISION_HIDDEN = 64

LLAMA4 = Recipe(
    name="tiny-llama4",
    model="Llama4ForConditionalGeneration",
    description="Llama 4: up to 4 64 px tiles + global image, pixel shuffle (0.5), MoE text layers with "
                "chunked local attention + a global NoPE layer (iRoPE)",
    tokens=("<|begin_of_text|>", "<|end_of_text|>", "<|finetune_right_pad|>", "<|header_start|>",
            "<|header_end|>", "<|eot|>", "<|image_start|>", "<|image_end|>", "<|image|>", "<|patch|>",
            "<|tile_x_separator|>", "<|tile_y_separator|>"),
    bos="<|begin_of_text|>", eos="<|eot|>", pad="<|finetune_right_pad|>", stops=("<|end_of_text|>",),
    template=Template(prefix="<|begin_of_text|>", turn="<|header_start|>{role}<|header_end|>\n\n", end="<|eot|>",
                      generation="<|header_start|>assistant<|header_end|>\n\n", image="<|image|>"),
    tokenizer_kwargs={"bos_token": "<|begin_of_text|>"},
    config=Part("Llama4Config", {
        "text_config": {
            "vocab_size": VOCAB, "hidden_size": 128, "intermediate_size": 256, "intermediate_size_mlp": 256,
            "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 64,
            "max_position_embeddings": 4096, "rope_parameters": {"rope_type": "default", "rope_theta": 500000.0},
            "num_local_experts": 4, "num_experts_per_tok": 1, "interleave_moe_layer_step": 2,
            "no_rope_layers": [1, 0], "attention_chunk_size": 64, "use_qk_norm": True,
            "attn_temperature_tuning": False,
            "bos_token_id": tok("<|begin_of_text|>"), "eos_token_id": tok("<|eot|>"),
            "pad_token_id": tok("<|finetune_right_pad|>"), "tie_word_embeddings": False,
        },
        "vision_config": {
            "hidden_size": VISION_HIDDEN, "intermediate_size": 4 * VISION_HIDDEN, "num_hidden_layers": 2,
            "num_attention_heads": 1, "image_size": TILE, "patch_size": PATCH_SIZE, "pixel_shuffle_ratio": 0.5,
            "projector_input_dim": 128, "projector_output_dim": 128, "vision_output_dim": 128,
            "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0},
        },
        "image_token_index": tok("<|patch|>"), "boi_token_index": tok("<|image_start|>"),
        "eoi_token_index": tok("<|image_end|>"), "tie_word_embeddings": False,
    }),
    processor=Part("Llama4Processor", {
        "image_processor": Part("Llama4ImageProcessor", {
            "size": {"height": TILE, "width": TILE}, "max_patches": 4, "resize_to_max_canvas": False,
            "do_normalize": False}),
        "patch_size": PATCH_SIZE, "pixel_shuffle_ratio": 0.5,
    }),
    head_std=0.3,  # see tiny-llava
    processor_options={"max_patches": 1},  # the global image only, one tile: 16 tokens
    image_embeds="vLLM 0.32's Llama 4 takes pixel values only (no image-embeddings input)",
)

RECIPES = (LLAMA4,)
