"""LLaVA-OneVision: anyres-max tiling on a SigLIP tower, a Qwen2 decoder, video frames pooled 2x2.

Images take LLaVA-NeXT's any-resolution path (best-fit grid pinpoint, 64x64 tiles plus the whole image as
a base tile, unpadding, an `image_newline` after every grid row) with OneVision's "anyres_max_9" cap: when
the unpadded grid holds more than 9 tiles' worth of patches (x 1.1), it is scaled down bilinearly to about
that size. The pinpoints are every 1..4 x 1..4 grid of 64 px tiles (the hub's 384 px x 1..6 grid scaled
down), so a square photo takes the 4x4 grid, whose 16x16 patch grid is capped to 12x12: a 448x448 image
gives 172 image tokens (16 base + 144 + 12 newlines). Video frames are resized to one 64 px tile each,
their 4x4 patch features pooled to 2x2, and the video ends with one `image_newline`.

SigLIP has no CLS token, so the feature strategy is "full" and the last layer is used (OneVision's own
`vision_feature_layer=-1`); its attention-pooling head is not built (`vision_use_head=False`), as on the hub.

vLLM 0.32 returns 3-D video embeddings when videos of different frame counts share an encoder batch
(`_process_video_pixels`' list path), so batched video cases error there (repro: repro/vllm_llava_onevision_mixed_video_lengths.py);
a video alone, or videos of one length, match transformers.
"""
from __future__ import annotations

from harness.inputs.models.recipe import VOCAB, Part, Recipe, Template, tok

TILE = 64
PATCH_SIZE = 16
# (height, width): every grid of 1..4 x 1..4 tiles.
PINPOINTS = [[TILE * h, TILE * w] for h in range(1, 5) for w in range(1, 5)]

LLAVA_ONEVISION = Recipe(
    name="tiny-llava-onevision",
    model="LlavaOnevisionForConditionalGeneration",
    description="LLaVA-OneVision: anyres-max tiling (64 px tiles, up to 4x4, capped at 9 tiles' worth), SigLIP, "
                "image-newline tokens, video frames pooled 2x2, Qwen2",
    tokens=("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<video>"),
    bos="<|endoftext|>", eos="<|im_end|>", pad="<|endoftext|>", stops=("<|endoftext|>",),
    template=Template(image="<image>\n", video="<video>\n"),  # ChatML, one line per image or video part
    config=Part("LlavaOnevisionConfig", {
        "text_config": {
            "model_type": "qwen2", "vocab_size": VOCAB, "hidden_size": 128, "intermediate_size": 256,
            "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1,
            "max_position_embeddings": 4096, "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0},
            "bos_token_id": tok("<|endoftext|>"), "eos_token_id": tok("<|im_end|>"),
            "pad_token_id": tok("<|endoftext|>"), "tie_word_embeddings": False,
        },
        "vision_config": {
            "model_type": "siglip_vision_model", "hidden_size": 64, "intermediate_size": 128,
            "num_hidden_layers": 2, "num_attention_heads": 1, "image_size": TILE, "patch_size": PATCH_SIZE,
            "vision_use_head": False,
        },
        "image_token_index": tok("<image>"), "video_token_index": tok("<video>"),
        "image_grid_pinpoints": PINPOINTS, "vision_aspect_ratio": "anyres_max_9",
        "vision_feature_select_strategy": "full", "vision_feature_layer": -1,
        "projector_hidden_act": "gelu", "tie_word_embeddings": False,
    }),
    processor=Part("LlavaOnevisionProcessor", {
        # The pinpoints must equal the config's (the model un-tiles with the config's).
        "image_processor": Part("LlavaOnevisionImageProcessor", {
            "size": {"height": TILE, "width": TILE}, "image_grid_pinpoints": PINPOINTS}),
        "video_processor": Part("LlavaOnevisionVideoProcessor", {"size": {"height": TILE, "width": TILE}}),
        "num_image_tokens": (TILE // PATCH_SIZE) ** 2,  # patches of one tile
        "vision_feature_select_strategy": "full", "vision_aspect_ratio": "anyres_max_9",
    }),
    # Logits spread by about sqrt(128) * 0.3 = 3.4 nats: peaky, so greedy decoding does not flip on float32 noise.
    head_std=0.3,
    # transformers 5.19 saves SigLIP without its `vision_model.` level, which vLLM 0.32 needs.
    renames=(("vision_tower.", "vision_tower.vision_model."),),
    processor_options=None,
    # As LLaVA-NeXT (same embedding schema and parser in vLLM 0.32): see zoo/llava_next.py.
    image_embeds="vLLM 0.32 takes LLaVA-OneVision embeddings only as one plain tensor per image (not the "
                 "harness's {image_embeds, image_sizes} dict) and refuses images of different token counts "
                 "in one batch",
)

RECIPES = (LLAVA_ONEVISION,)
