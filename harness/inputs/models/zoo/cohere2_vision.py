"""Cohere2 Vision (Command A Vision): SigLIP on 64 px tiles plus a thumbnail, pixel shuffle, SwiGLU projector,
Cohere2 text (a sliding-window RoPE layer and a global NoPE layer, tied head with a logit scale).

The image is cut into up to 4 tiles of 64x64 (the grid closest to its aspect ratio) plus a 64x64 thumbnail
when there is more than one tile; each tile's 4x4 SigLIP patches are pixel-shuffled to 2x2 = 4 image tokens
and followed by `<|IMG_LINE_BREAK|>`, the whole image framed by `<|START_OF_IMG|>...<|END_OF_IMG|>`.

Settings that are not obvious:
- the sliding window is 4096 tokens, longer than any case: the sliding layer differs from the global one by
  its RoPE only (the window's edge, which vLLM sets at `sliding_window + 1`, is not exercised);
- the image processor's `patch_size` is the side of a tile in image tokens (2: 4 tokens a tile), not the
  vision tower's patch size (16);
- vLLM ties Cohere's output head to the embeddings, so the checkpoint is tied (as LFM2-VL's): embeddings at
  N(0, 0.3), final norm scale drawn around 0 (see `weights.redraw`): logits spread by about
  sqrt(128) * 0.3 = 3.4 nats;
- `logit_scale` is 1: transformers 5.19's Cohere2VisionForConditionalGeneration never multiplies its
  logits by `text_config.logit_scale` (Cohere2ForCausalLM and vLLM do), so any other value makes every
  prompt logprob differ by that factor (repro/transformers_cohere2_vision_logit_scale.py);
- transformers 5.19 saves the SigLIP tower without its `vision_model.` level, which vLLM 0.32 wants.
"""
from __future__ import annotations

from harness.inputs.models.recipe import VOCAB, Part, Recipe, Template, tok

TILE = 64
TOKENS = ("<PAD>", "<BOS_TOKEN>", "<|END_OF_TURN_TOKEN|>", "<|START_OF_TURN_TOKEN|>", "<|USER_TOKEN|>",
          "<|CHATBOT_TOKEN|>", "<|SYSTEM_TOKEN|>", "<|START_OF_IMG|>", "<|END_OF_IMG|>", "<|IMG_LINE_BREAK|>",
          "<|IMG_PATCH|>")

COHERE2_VISION = Recipe(
    name="tiny-cohere2-vision",
    model="Cohere2VisionForConditionalGeneration",
    description="Cohere2 Vision: SigLIP 64 px tiles + thumbnail, pixel shuffle, SwiGLU projector, "
                "Cohere2 (sliding RoPE + global NoPE layers, tied head)",
    tokens=TOKENS, bos="<BOS_TOKEN>", eos="<|END_OF_TURN_TOKEN|>", pad="<PAD>",
    template=Template(prefix="<BOS_TOKEN>", turn="<|START_OF_TURN_TOKEN|>{role}", end="<|END_OF_TURN_TOKEN|>",
                      generation="<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>", image="<|IMG_PATCH|>",
                      roles={"user": "<|USER_TOKEN|>", "assistant": "<|CHATBOT_TOKEN|>",
                             "system": "<|SYSTEM_TOKEN|>"}),
    tokenizer_kwargs={"bos_token": "<BOS_TOKEN>", "extra_special_tokens": {
        "image_token": "<|IMG_PATCH|>", "boi_token": "<|START_OF_IMG|>", "eoi_token": "<|END_OF_IMG|>",
        "img_line_break_token": "<|IMG_LINE_BREAK|>"}},
    config=Part("Cohere2VisionConfig", {
        "text_config": {
            "model_type": "cohere2", "architectures": ["Cohere2ForCausalLM"], "vocab_size": VOCAB,
            "hidden_size": 128, "intermediate_size": 256,
            "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1,
            "layer_types": ["sliding_attention", "full_attention"], "sliding_window": 4096,
            "max_position_embeddings": 4096, "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0},
            "logit_scale": 1.0, "bos_token_id": tok("<BOS_TOKEN>"), "eos_token_id": tok("<|END_OF_TURN_TOKEN|>"),
            "pad_token_id": tok("<PAD>"), "tie_word_embeddings": True,
        },
        "vision_config": {"model_type": "siglip_vision_model", "hidden_size": 64, "intermediate_size": 128,
                          "num_hidden_layers": 2, "num_attention_heads": 1, "image_size": TILE, "patch_size": 16,
                          "vision_use_head": False},
        "downsample_factor": 2, "alignment_intermediate_size": 256, "image_token_id": tok("<|IMG_PATCH|>"),
        "tie_word_embeddings": True,
    }),
    processor=Part("Cohere2VisionProcessor", {
        "image_processor": Part("Cohere2VisionImageProcessor", {
            "size": {"height": TILE, "width": TILE}, "crop_to_patches": True, "min_patches": 1, "max_patches": 4,
            "patch_size": 2}),
    }),
    emitted=("<|END_OF_TURN_TOKEN|>",),
    renames=(("model.vision_tower.", "model.vision_tower.vision_model."),),
    head_std=None, embed_std=0.3, zero_mean_norms=("model.language_model.norm.weight",),
    processor_options={"crop_to_patches": False},  # the thumbnail-sized single tile only
    image_embeds="vLLM 0.32's Cohere2Vision processor fails on precomputed embeddings and its model asserts "
                 "it takes none (measured)",
)

RECIPES = (COHERE2_VISION,)
