"""LLaVA: the classic layout, a CLIP tower on one fixed-size image, a two-layer projector, a Llama decoder.

One 64x64 image (16 patches of 16 pixels); LLaVA's default `vision_feature_layer=-2` takes the second-to-last
of three CLIP layers (vLLM drops the last one when it loads; HF computes and ignores it) without the CLS token.
"""
from __future__ import annotations

from harness.inputs.models.recipe import VOCAB, Part, Recipe, Template, tok

IMAGE_SIZE = 64
PATCH_SIZE = 16
# A Llama decoder with ChatML's turn tokens, untied head (shared with LLaVA-NeXT).
LLAMA_TEXT = {
    "model_type": "llama", "vocab_size": VOCAB, "hidden_size": 128, "intermediate_size": 256,
    "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1,
    "max_position_embeddings": 4096, "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0},
    "bos_token_id": tok("<|endoftext|>"), "eos_token_id": tok("<|im_end|>"),
    "pad_token_id": tok("<|endoftext|>"), "tie_word_embeddings": False,
}


def clip_vision(image_size: int) -> dict:
    """Three CLIP layers on `image_size` px of 16 px patches, of which `vision_feature_layer=-2` uses two."""
    return {"model_type": "clip_vision_model", "hidden_size": 64, "intermediate_size": 128, "projection_dim": 64,
            "num_hidden_layers": 3, "num_attention_heads": 1, "image_size": image_size, "patch_size": PATCH_SIZE}


LLAVA = Recipe(
    name="tiny-llava",
    model="LlavaForConditionalGeneration",
    description="LLaVA: CLIP vision (64 px, 16 patches) + 2-layer projector + Llama",
    tokens=("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>"),
    bos="<|endoftext|>", eos="<|im_end|>", pad="<|endoftext|>", stops=("<|endoftext|>",),
    template=Template(image="<image>\n"),  # ChatML with one `<image>` line per image part
    config=Part("LlavaConfig", {
        "text_config": LLAMA_TEXT,
        "vision_config": clip_vision(IMAGE_SIZE),
        "image_token_index": tok("<image>"), "image_seq_length": (IMAGE_SIZE // PATCH_SIZE) ** 2,
        "vision_feature_select_strategy": "default", "vision_feature_layer": -2,
        "projector_hidden_act": "gelu", "tie_word_embeddings": False,
    }),
    processor=Part("LlavaProcessor", {
        "image_processor": Part("CLIPImageProcessor", {
            "size": {"shortest_edge": IMAGE_SIZE}, "crop_size": {"height": IMAGE_SIZE, "width": IMAGE_SIZE}}),
        "patch_size": PATCH_SIZE, "vision_feature_select_strategy": "default",
        "num_additional_image_tokens": 1,  # CLIP's CLS token, which the "default" strategy drops
    }),
    # Logits spread by about sqrt(128) * 0.3 = 3.4 nats: peaky, so greedy decoding does not flip on float32
    # noise (at the shared 0.08 the top tokens were 0.03 apart).
    head_std=0.3,
    # transformers 5.19 saves CLIP without its `vision_model.` level, which vLLM 0.32 needs.
    renames=(("vision_tower.", "vision_tower.vision_model."),),
    image_embeds=None,
)

RECIPES = (LLAVA,)
