"""Mistral 3 (HF format): Pixtral's variable-resolution ViT, row-break tokens, the patch merger, Mistral.

No tiles: the image is scaled down (never up) to fit 192 px on its long side, keeping its aspect ratio,
and rounded up to whole 32 px cells (16 px patches x `spatial_merge_size` 2); the Pixtral tower sees
all of its patches in one sequence with 2-D rotary positions, the patch merger folds each 2x2 block of
patches into one token, and the prompt gets one `[IMG]` per cell, `[IMG_BREAK]` after each row and
`[IMG_END]` in place of the last break. A 448x448 image is 6x6 = 36 image tokens (+ 5 breaks + end);
a 300x200 one 6x4; images under 192 px keep their size (112 px: 4x4).

Saved in the transformers format with a plain `tokenizer.json` (no `tekken.json`), so vLLM's
`tokenizer_mode=auto` loads the HF tokenizer and `PixtralProcessor`, not mistral_common. The text model's
`rms_norm_eps` is 1e-5 as in the hub checkpoints: the projector's norm takes it in transformers, while
vLLM 0.32 hard-codes 1e-5 there. The template is ChatML-shaped with Mistral's tokens (Template has one
turn marker for every role, Mistral's `[INST]`/`[/INST]` depend on the role).

transformers 5.19 fails an image that gives exactly one token (`tiny-png`, 28x28: one 32 px cell):
`get_image_features` squeezes the token axis away (repro/transformers_mistral3_one_token_image.py).
"""
from __future__ import annotations

from harness.inputs.models.recipe import VOCAB, Part, Recipe, Template, tok

PATCH_SIZE = 16
MERGE = 2
LONGEST_EDGE = 192

MISTRAL3 = Recipe(
    name="tiny-mistral3",
    model="Mistral3ForConditionalGeneration",
    description="Mistral 3: Pixtral variable-resolution ViT (2-D RoPE, up to 192 px), [IMG_BREAK]/[IMG_END] "
                "row tokens, 2x2 patch merger, Mistral",
    tokens=("<unk>", "<s>", "</s>", "[INST]", "[/INST]", "[IMG]", "[IMG_BREAK]", "[IMG_END]"),
    bos="<s>", eos="</s>", pad="<unk>",
    template=Template(prefix="<s>", turn="[INST]{role}\n", end="</s>\n", generation="[INST]assistant\n",
                      image="[IMG]"),
    tokenizer_kwargs={"bos_token": "<s>", "unk_token": "<unk>"},
    config=Part("Mistral3Config", {
        "text_config": {
            "model_type": "mistral", "vocab_size": VOCAB, "hidden_size": 128, "intermediate_size": 256,
            "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 64,
            "max_position_embeddings": 4096, "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0},
            "sliding_window": None, "rms_norm_eps": 1e-5,
            "bos_token_id": tok("<s>"), "eos_token_id": tok("</s>"), "pad_token_id": tok("<unk>"),
            "tie_word_embeddings": False,
        },
        "vision_config": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                          "num_attention_heads": 1, "image_size": LONGEST_EDGE, "patch_size": PATCH_SIZE},
        "image_token_index": tok("[IMG]"), "spatial_merge_size": MERGE, "vision_feature_layer": -1,
        "tie_word_embeddings": False,
    }),
    processor=Part("PixtralProcessor", {
        "image_processor": Part("PixtralImageProcessor", {
            "size": {"longest_edge": LONGEST_EDGE}, "patch_size": {"height": PATCH_SIZE, "width": PATCH_SIZE}}),
        "patch_size": PATCH_SIZE, "spatial_merge_size": MERGE,
    }),
    head_std=0.3,  # see tiny-llava
    processor_options={"size": {"longest_edge": 64}},  # at most 2x2 cells
    image_embeds="vLLM 0.32's Mistral3 has no image-embeddings path (it builds pixel inputs from them)",
)

RECIPES = (MISTRAL3,)
