"""LFM2-VL: SigLIP2 NaFlex tiles plus a thumbnail, pixel unshuffle, a hybrid conv/attention language model.

Large images are cut into 64x64 tiles (4 tokens each) plus a thumbnail of at most 16. Two builds: two query
heads (shows vLLM CPU's rotary bug for 3-D multi-head queries, see repro/vllm_cpu_rotary_3d.py) and one,
which vLLM CPU runs at parity. vLLM always ties LFM2's output head to its embeddings, so the checkpoint is
tied too (an untied one would load in vLLM with the wrong head).
"""
from __future__ import annotations

from dataclasses import replace

from harness.inputs.models.recipe import VOCAB, Part, Recipe, Template, tok

TILE_TOKENS = tuple(f"<|img_row_{r}_col_{c}|>" for r in range(1, 5) for c in range(1, 5))


def _config(num_heads: int) -> Part:
    """One conv layer and one attention layer; vision head_dim 64. vLLM's LFM2 reads `conv_dim` and
    `block_dim`, which transformers' config does not define, so both are set explicitly."""
    return Part("Lfm2VlConfig", {
        "text_config": {
            "model_type": "lfm2", "architectures": ["Lfm2ForCausalLM"], "vocab_size": VOCAB, "hidden_size": 128,
            "intermediate_size": 256, "block_auto_adjust_ff_dim": False, "num_hidden_layers": 2,
            "layer_types": ["conv", "full_attention"], "num_attention_heads": num_heads, "num_key_value_heads": 1,
            "conv_L_cache": 3, "conv_bias": False, "conv_dim": 128, "block_dim": 128,
            "max_position_embeddings": 4096, "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0},
            "bos_token_id": tok("<|startoftext|>"), "eos_token_id": tok("<|im_end|>"), "pad_token_id": tok("<|pad|>"),
            "tie_word_embeddings": True,
        },
        "vision_config": {
            "model_type": "siglip2_vision_model", "hidden_size": 64, "intermediate_size": 128,
            "num_hidden_layers": 2, "num_attention_heads": 1, "patch_size": 16, "num_patches": 64,
            "vision_use_head": False,
        },
        "image_token_id": tok("<image>"), "projector_hidden_size": 128, "downsample_factor": 2,
        "tie_word_embeddings": True,
    })


LFM2_VL = Recipe(
    name="tiny-lfm2-vl",
    model="Lfm2VlForConditionalGeneration",
    description="LFM2-VL: SigLIP2 NaFlex, 64 px tiles + thumbnail, conv/attention LFM2 with 2 query heads "
                "(vLLM 0.32 CPU rotates 3-D multi-head queries wrongly: fails parity, see repro/)",
    tokens=("<|pad|>", "<|startoftext|>", "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>",
            "<|image_start|>", "<|image_end|>", "<|img_thumbnail|>", *TILE_TOKENS),
    bos="<|startoftext|>", eos="<|im_end|>", pad="<|pad|>", stops=("<|endoftext|>",),
    template=Template(prefix="<|startoftext|>", image="<image>"),  # ChatML after LFM2's start of text
    tokenizer_kwargs={"bos_token": "<|startoftext|>"},
    config=_config(num_heads=2),
    processor=Part("Lfm2VlProcessor", {
        # 64x64 tiles of 4 tokens, up to 2x2 of them plus a thumbnail of at most 16.
        "image_processor": Part("Lfm2VlImageProcessor", {
            "encoder_patch_size": 16, "downsample_factor": 2, "min_image_tokens": 4, "max_image_tokens": 16,
            "tile_size": 64, "min_tiles": 2, "max_tiles": 4, "do_image_splitting": True, "use_thumbnail": True}),
    }),
    # With the head tied, a zeroed output row is a zeroed embedding too, so only the chat markers keep theirs.
    emitted=("<|im_start|>", "<|im_end|>"),
    # Tied head: logits are the final hidden state times the embeddings, so they are drawn smaller than the
    # untied recipes' N(0, 1) (logit spread about sqrt(128) * 0.3 = 3.4 nats), and the final norm's scale
    # around 0, else every token predicts itself.
    embed_std=0.3, zero_mean_norms=("model.language_model.embedding_norm.weight",),
    # transformers 5 saves the SigLIP2 tower without its `vision_model.` level; vLLM 0.32 wants it.
    renames=(("model.vision_tower.", "model.vision_tower.vision_model."),),
    processor_options={"do_image_splitting": False},
    image_embeds="vLLM 0.32's LFM2-VL counts precomputed embeddings as extra images (measured)",
)

LFM2_VL_1HEAD = replace(
    LFM2_VL, name="tiny-lfm2-vl-1head", config=_config(num_heads=1),
    description="LFM2-VL as tiny-lfm2-vl but with 1 query head, which vLLM 0.32 CPU runs at parity")

RECIPES = (LFM2_VL, LFM2_VL_1HEAD)
