"""InternVL (transformers format): dynamic tiling with a thumbnail, InternViT, pixel shuffle, Qwen2.

The image processor (GotOcr2's, `crop_to_patches`) picks the grid of 1 to 4 64x64 tiles whose aspect ratio
best fits the image, cuts it, and adds the whole image resized to one tile (the thumbnail) whenever there
is more than one tile. Each tile goes through the ViT (8 px patches: 8x8 patches plus a CLS token, which
is dropped), the 8x8 patch grid is pixel-shuffled to 4x4 (`downsample_ratio` 0.5, 4x the channels), and
a LayerNorm + 2-layer MLP projects it: 16 `<IMG_CONTEXT>` tokens per tile, the image framed by
`<img>...</img>`. A 448x448 image is 2x2 tiles + thumbnail = 80 image tokens; a wide image 3x1 + thumbnail.

vLLM 0.32 serves `InternVLForConditionalGeneration` through its InternS1 code, which reads this layout.
Patches of 8 px (InternVL's are 14 on 448 px tiles) keep the shuffled grid 4x4, so the pixel shuffle
moves real rows and columns, not a 2x2 grid into one token.
"""
from __future__ import annotations

from harness.inputs.models.recipe import VOCAB, Part, Recipe, Template, tok

TILE = 64
PATCH_SIZE = 8
IMAGE_SEQ_LENGTH = (TILE // PATCH_SIZE) ** 2 // 4  # after the 0.5 pixel shuffle

INTERNVL = Recipe(
    name="tiny-internvl",
    model="InternVLForConditionalGeneration",
    description="InternVL: 1-4 64 px tiles + thumbnail, InternViT, pixel shuffle (0.5), Qwen2; "
                "16 tokens per tile inside <img>...</img>",
    tokens=("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<img>", "</img>", "<IMG_CONTEXT>", "<video>"),
    bos="<|endoftext|>", eos="<|im_end|>", pad="<|endoftext|>", stops=("<|endoftext|>",),
    # InternVL3's ChatML: one `<IMG_CONTEXT>` line per image part, which the processor expands.
    template=Template(image="<IMG_CONTEXT>\n"),
    # InternVLProcessor finds its image tokens by these tokenizer attributes (`start_image_token` ...).
    tokenizer_kwargs={
        "bos_token": "<|endoftext|>",
        "extra_special_tokens": {"start_image_token": "<img>", "end_image_token": "</img>",
                                 "context_image_token": "<IMG_CONTEXT>", "video_token": "<video>"},
    },
    # InternVLConfig ties the head by default; vLLM reads the text config's flag, so both are untied.
    config=Part("InternVLConfig", {
        "text_config": {
            "model_type": "qwen2", "vocab_size": VOCAB, "hidden_size": 128, "intermediate_size": 256,
            "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1,
            "max_position_embeddings": 4096, "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0},
            "bos_token_id": tok("<|endoftext|>"), "eos_token_id": tok("<|im_end|>"),
            "pad_token_id": tok("<|endoftext|>"), "tie_word_embeddings": False,
        },
        "vision_config": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                          "num_attention_heads": 1, "image_size": TILE, "patch_size": PATCH_SIZE},
        "image_token_id": tok("<IMG_CONTEXT>"), "image_seq_length": IMAGE_SEQ_LENGTH, "downsample_ratio": 0.5,
        "tie_word_embeddings": False,
    }),
    processor=Part("InternVLProcessor", {
        "image_processor": Part("GotOcr2ImageProcessor", {
            "size": {"height": TILE, "width": TILE}, "crop_to_patches": True, "min_patches": 1, "max_patches": 4}),
        "video_processor": Part("InternVLVideoProcessor", {"size": {"height": TILE, "width": TILE}}),
        "image_seq_length": IMAGE_SEQ_LENGTH,
    }),
    head_std=0.3,  # see tiny-llava
    processor_options={"crop_to_patches": False},  # the thumbnail-sized single tile only: 16 tokens
    image_embeds="vLLM 0.32's InternVL takes embeddings only as bare tensors, one (tiles x 16, hidden) per image "
                 "(measured: equal to pixels); the harness sends a dict with processor metadata, which it "
                 "rejects as images",
)

RECIPES = (INTERNVL,)
