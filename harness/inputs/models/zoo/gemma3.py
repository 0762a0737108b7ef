"""Gemma 3: SigLIP tower, 4x4 average-pooled soft tokens, pan-and-scan crops, prefix-LM image attention,
sliding-window Gemma 3 text layers.

Every image is resized to 64x64 (8x8 SigLIP patches, pooled to 16 soft tokens framed by
`\\n\\n<start_of_image> ... <end_of_image>\\n\\n`); with pan-and-scan a wide or tall image (aspect ratio at
least 1.2, crops of at least 32 px) also gets 2-3 crops, each another 16 tokens (a 448x448 image: 16; the
300x56 wide-bands case: 64). transformers attends bidirectionally within each image's tokens
(`token_type_ids`); one sliding (window 24, shorter than a cropped image's span) and one full layer.

Why the non-obvious settings:
- Pan-and-scan is switched on through the tokenizer's init kwargs: `Gemma3ProcessorKwargs._defaults`
  (`do_pan_and_scan: False`, min crop 256) outrank the image processor's own attributes in
  `ProcessorMixin._merge_kwargs`; only call kwargs and tokenizer init kwargs outrank them, and vLLM counts
  crops through the same `_merge_kwargs`. The image processor carries them too, for whoever reads it.
- "\\n" to "\\n\\n\\n\\n" are special tokens: vLLM's Gemma 3 processor looks them up by text in the vocabulary
  (`vocab["\\n\\n"]`, to merge newlines around the image sequence), which a byte-level vocabulary spells "Ċ".
  The tokenizer's longest match then gives "\\n\\n\\n" as one token as Gemma's tokenizer does.
- Untied head (vLLM's Gemma 3 honours `tie_word_embeddings: False`), drawn at 0.3 as tiny-llava's.
- `query_pre_attn_scalar` 64 = head_dim; two rope bases as Gemma 3 (local 1e4, global 1e6).

vLLM 0.32 on CPU runs every image case causally over the image tokens (its CPU attention backend is
chosen although it does not support the multimodal prefix mask; no error): image cases fail parity from
the first image token, text-only cases pass (repro/vllm_cpu_gemma3_mm_prefix.py).
"""
from __future__ import annotations

from harness.inputs.models.recipe import VOCAB, Part, Recipe, Template, tok

IMAGE_SIZE = 64
PATCH_SIZE = 8
MM_TOKENS = 16  # 8x8 patches average-pooled 2x2 -> 4x4
# See the docstring: these reach both processors only as tokenizer init kwargs.
PAN_AND_SCAN = {"do_pan_and_scan": True, "pan_and_scan_min_crop_size": 32, "pan_and_scan_max_num_crops": 3,
                "pan_and_scan_min_ratio_to_activate": 1.2}

GEMMA3 = Recipe(
    name="tiny-gemma3",
    model="Gemma3ForConditionalGeneration",
    description="Gemma 3: SigLIP 64 px + pan-and-scan crops (16 tokens each), bidirectional attention over "
                "image tokens, sliding-window layers (vLLM 0.32 CPU attends causally over image tokens: "
                "image cases fail parity, see repro/)",
    tokens=("<pad>", "<eos>", "<bos>", "<start_of_turn>", "<end_of_turn>", "<start_of_image>", "<end_of_image>",
            "<image_soft_token>", "\n", "\n\n", "\n\n\n", "\n\n\n\n"),
    bos="<bos>", eos="<end_of_turn>", pad="<pad>", stops=("<eos>",),
    # `<bos><start_of_turn>user\n<start_of_image>question<end_of_turn>\n<start_of_turn>model\n`
    template=Template(prefix="<bos>", turn="<start_of_turn>{role}\n", end="<end_of_turn>\n",
                      generation="<start_of_turn>model\n", image="<start_of_image>", roles={"assistant": "model"}),
    tokenizer_kwargs={"bos_token": "<bos>",
                      "extra_special_tokens": {"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>",
                                               "image_token": "<image_soft_token>"},
                      **PAN_AND_SCAN},
    config=Part("Gemma3Config", {
        "text_config": {
            "vocab_size": VOCAB, "hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2,
            "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 64, "query_pre_attn_scalar": 64,
            "max_position_embeddings": 4096, "sliding_window": 24,
            "layer_types": ["sliding_attention", "full_attention"],
            "rope_parameters": {"full_attention": {"rope_type": "default", "rope_theta": 1000000.0},
                                "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}},
            "bos_token_id": tok("<bos>"), "eos_token_id": tok("<end_of_turn>"), "pad_token_id": tok("<pad>"),
            "tie_word_embeddings": False,
        },
        "vision_config": {"model_type": "siglip_vision_model", "hidden_size": 64, "intermediate_size": 128,
                          "num_hidden_layers": 2, "num_attention_heads": 1, "image_size": IMAGE_SIZE,
                          "patch_size": PATCH_SIZE, "vision_use_head": False},
        "mm_tokens_per_image": MM_TOKENS, "boi_token_index": tok("<start_of_image>"),
        "eoi_token_index": tok("<end_of_image>"), "image_token_index": tok("<image_soft_token>"),
        "tie_word_embeddings": False,
    }),
    processor=Part("Gemma3Processor", {
        "image_processor": Part("Gemma3ImageProcessor", {"size": {"height": IMAGE_SIZE, "width": IMAGE_SIZE},
                                                         **PAN_AND_SCAN}),
        "image_seq_length": MM_TOKENS,
    }),
    emitted=("<end_of_turn>",),
    # transformers 5.19 saves the SigLIP tower without its `vision_model.` level, which vLLM 0.32 loads.
    renames=(("vision_tower.", "vision_tower.vision_model."),),
    head_std=0.3,
    processor_options={"do_pan_and_scan": False},  # the resized image only, no crops
    image_embeds="vLLM 0.32's Gemma3ForConditionalGeneration asserts image_embeds is None",
)

RECIPES = (GEMMA3,)
