"""GLM-4.1V / 4.5V: a dynamic-resolution ViT with 2D RoPE and interpolated learned positions, 3D M-RoPE text.

The ViT cuts an image into 14 px patches, adds its learned position table bicubically resampled to the
image's patch grid, rotates queries and keys by their (row, column) (2D RoPE on half of each head), and a
2x2 conv merges patches into text tokens; the GLM-4 text model rotates half of each head (interleaved
pairs) by M-RoPE (temporal, height, width) positions. Images are resized to between 56x56 and 140x140
pixels (a 448x448 image: 10x10 patches, 25 image tokens). Video frames are framed per pair of frames by
`<|begin_of_image|>...<|end_of_image|>` plus a timestamp, inside `<|begin_of_video|>...<|end_of_video|>`.

Settings that are not obvious:
- `partial_rotary_factor: 0.5` is written out: transformers' Glm4v text rotary defaults to 1.0 where
  vLLM's GLM-4 defaults to 0.5 (the real checkpoints write 0.5); `mrope_section` then splits the 32
  rotated dims' 16 frequencies 4/6/6.
- `attention_bias: True` is written out too: transformers' GLM-4V text attention always has q/k/v biases
  (its config has no such key), vLLM's GLM-4 reads `attention_bias` (default False) and, without it,
  silently drops the saved biases (every text token then differs from layer 0 on).
- the image processor's pixel bounds count two frames (GLM's `smart_resize` takes an image as
  `temporal_patch_size` frames), so they are twice the pixels of one image.
- the vision MLP is `out_hidden_size` wide and the merger `intermediate_size` (GLM's layout); the merger's
  output (`out_hidden_size`) is the text hidden size.
"""
from __future__ import annotations

from harness.inputs.models.recipe import VOCAB, Part, Recipe, Template, tok

TOKENS = ("<|endoftext|>", "[gMASK]", "<sop>", "<|system|>", "<|user|>", "<|assistant|>",
          "<|begin_of_image|>", "<|end_of_image|>", "<|image|>", "<|begin_of_video|>", "<|end_of_video|>",
          "<|video|>")
# Two frames' pixels (see above): one image is 56x56 to 140x140 pixels.
SIZE = {"shortest_edge": 2 * 56 * 56, "longest_edge": 2 * 140 * 140}
VISION = {"patch_size": 14, "temporal_patch_size": 2, "merge_size": 2}

GLM4V = Recipe(
    name="tiny-glm4v",
    model="Glm4vForConditionalGeneration",
    description="GLM-4.1V: ViT with 2D RoPE + interpolated positions, 2x2 conv merge, GLM-4 text with "
                "3D M-RoPE (partial, interleaved); video frames with timestamps",
    tokens=TOKENS, bos="[gMASK]", eos="<|endoftext|>", pad="<|endoftext|>",
    # GLM ends an assistant turn with the next role marker; its generation config stops on <|user|> too.
    stops=("<|user|>",),
    emitted=("<|endoftext|>", "<|user|>"),
    # `[gMASK]<sop><|user|>\n<|begin_of_image|><|image|><|end_of_image|>question<|assistant|>\n`
    template=Template(prefix="[gMASK]<sop>", turn="<|{role}|>\n", end="", generation="<|assistant|>\n",
                      image="<|begin_of_image|><|image|><|end_of_image|>",
                      video="<|begin_of_video|><|video|><|end_of_video|>"),
    config=Part("Glm4vConfig", {
        "text_config": {
            "vocab_size": VOCAB, "hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2,
            "num_attention_heads": 2, "num_key_value_heads": 1, "max_position_embeddings": 4096,
            "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [4, 6, 6],
                                "partial_rotary_factor": 0.5},
            "pad_token_id": tok("<|endoftext|>"), "attention_bias": True,
        },
        "vision_config": {"depth": 2, "hidden_size": 64, "num_heads": 1, "out_hidden_size": 128,
                          "intermediate_size": 256, "image_size": 56, "patch_size": 14, "spatial_merge_size": 2,
                          "temporal_patch_size": 2},
        "image_token_id": tok("<|image|>"), "video_token_id": tok("<|video|>"),
        "image_start_token_id": tok("<|begin_of_image|>"), "image_end_token_id": tok("<|end_of_image|>"),
        "video_start_token_id": tok("<|begin_of_video|>"), "video_end_token_id": tok("<|end_of_video|>"),
        "tie_word_embeddings": False,
    }),
    processor=Part("Glm4vProcessor", {
        "image_processor": Part("Glm4vImageProcessor", {"size": SIZE, **VISION}),
        "video_processor": Part("Glm4vVideoProcessor", {"size": SIZE, "max_image_size": {"longest_edge": 2 * 140 * 140},
                                                        **VISION}),
    }),
    head_std=0.3,  # see tiny-llava
    processor_options={"size": {"shortest_edge": 2 * 56 * 56, "longest_edge": 2 * 84 * 84}},
    video_options={"do_sample_frames": False},
    image_embeds="vLLM 0.32's GLM-4V processor hands precomputed embeddings to Glm4vProcessor as images, "
                 "which fails (measured)",
)

RECIPES = (GLM4V,)
