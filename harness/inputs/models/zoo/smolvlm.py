"""SmolVLM: 64 px tiles plus a downscaled global view, pixel shuffle, Llama (Idefics3's successor).

SmolVLM's own processor and model classes (`SmolVLMProcessor`, `SmolVLMForConditionalGeneration`), which
vLLM serves through its Idefics3 code: the image is resized to at most 128 pixels on its long side and cut
into 64x64 tiles plus the global view; each is encoded and pixel-shuffled 4x4 -> 2x2 (`scale_factor=2`):
4 image tokens per tile, each tile framed by `<fake_token_around_image><row_i_col_j>`, so a 448x448 image
is 2x2 tiles + the global view = 20 image tokens. SmolVLMProcessor needs the `num2words` package.

No video: vLLM 0.32's SmolVLM takes images only (the Idefics3 processing it inherits), so the config names
no video token and the video cases are skipped; the processor still needs a video processor to construct.
"""
from __future__ import annotations

from harness.inputs.models.recipe import VOCAB, Part, Recipe, Template, tok

TILE_SIZE = 64
PATCH_SIZE = 16
SCALE_FACTOR = 2
# The processor looks up row/column tags up to 6x6 whatever the tiling.
TILE_TOKENS = tuple(f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7))
# Frames (were videos taken) are squared to the tile size, as SmolVLM's video processor does.
SIZES = {"size": {"longest_edge": 2 * TILE_SIZE}, "max_image_size": {"longest_edge": TILE_SIZE}}

SMOLVLM = Recipe(
    name="tiny-smolvlm",
    model="SmolVLMForConditionalGeneration",
    description="SmolVLM: 64 px tiles + global view, pixel shuffle (scale 2), Llama; SmolVLM's own processor",
    tokens=("<|endoftext|>", "<|im_start|>", "<end_of_utterance>", "<fake_token_around_image>", "<image>",
            "<global-img>", *TILE_TOKENS),
    bos="<|endoftext|>", eos="<end_of_utterance>", pad="<|endoftext|>", stops=("<|endoftext|>",),
    # `<|im_start|>User:<image>question<end_of_utterance>\nAssistant:`
    template=Template(turn="<|im_start|>{Role}:", end="<end_of_utterance>\n", generation="Assistant:"),
    tokenizer_kwargs={"bos_token": "<|endoftext|>"},
    # vLLM reads `tie_word_embeddings` from the text config, so it is set there as well as at the top.
    config=Part("SmolVLMConfig", {
        "text_config": {
            "model_type": "llama", "vocab_size": VOCAB, "hidden_size": 128, "intermediate_size": 256,
            "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1,
            "max_position_embeddings": 4096, "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0},
            "bos_token_id": tok("<|endoftext|>"), "eos_token_id": tok("<end_of_utterance>"),
            "pad_token_id": tok("<|endoftext|>"), "tie_word_embeddings": False,
        },
        "vision_config": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                          "num_attention_heads": 1, "image_size": TILE_SIZE, "patch_size": PATCH_SIZE},
        "image_token_id": tok("<image>"), "scale_factor": SCALE_FACTOR, "pad_token_id": tok("<|endoftext|>"),
        "tie_word_embeddings": False,
    }),
    processor=Part("SmolVLMProcessor", {
        # Long side at most 128 pixels: up to 2x2 tiles of 64 plus the global view.
        "image_processor": Part("SmolVLMImageProcessor", SIZES),
        "video_processor": Part("SmolVLMVideoProcessor", SIZES),
        "image_seq_len": (TILE_SIZE // PATCH_SIZE) ** 2 // SCALE_FACTOR**2,
    }),
    head_std=0.3,  # see tiny-llava
    processor_options={"do_image_splitting": False},  # the global image only, no tiles
    image_embeds="vLLM 0.32's SmolVLM (Idefics3) processor rejects precomputed embeddings (measured)",
)

RECIPES = (SMOLVLM,)
