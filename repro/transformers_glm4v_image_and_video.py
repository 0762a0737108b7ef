"""Minimal reproduction: transformers 5.19's GLM-4V cannot take an image and a video in one prompt.

GLM-4.1V writes video frames with the image placeholder `<|image|>` (the processor marks which
`<|image|>` tokens belong to a video in `mm_token_type_ids`: 1 image, 2 video). But
`Glm4vModel.get_placeholder_mask` builds both masks as `input_ids == image_token_id` (its comment:
"GLM-4.1V and GLM-4.5V special_video_mask is special_image_mask") and ignores `mm_token_type_ids`,
so with both media present the image features are checked against (and would be scattered into)
every `<|image|>` token, the video's too: forward raises "Image features and image tokens do not
match". vLLM 0.32 takes the same request (it splits image and video placeholders itself). The
harness sees it as a reference error on the `image-and-video` case. transformers treats it as a known
limitation (huggingface/transformers PR #40025, "[GLM4V] fix vision placeholder mask": "GLM uses only
`image_token_id` to denote both inputs and doesn't do mixed input inference").

A random 2-layer model built here from a config (no download), one 56x56 image and a 2-frame
56x56 video. Run with the project venv:  .venv/bin/python repro/transformers_glm4v_image_and_video.py
Exit status: 1 while forward fails on image + video (the bug), 0 once it runs.
"""
from __future__ import annotations

import sys

import torch
import transformers
from transformers import Glm4vConfig, Glm4vForConditionalGeneration

IMAGE, VIDEO, BOI, EOI, BOV, EOV = 8, 9, 4, 5, 6, 7


def main() -> int:
    torch.manual_seed(0)
    config = Glm4vConfig(
        text_config={"vocab_size": 64, "hidden_size": 64, "intermediate_size": 64, "num_hidden_layers": 1,
                     "num_attention_heads": 1, "num_key_value_heads": 1,
                     "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0,
                                         "mrope_section": [2, 3, 3], "partial_rotary_factor": 0.5}},
        vision_config={"depth": 1, "hidden_size": 32, "num_heads": 1, "out_hidden_size": 64,
                       "intermediate_size": 64, "image_size": 56, "patch_size": 14},
        image_token_id=IMAGE, video_token_id=VIDEO, image_start_token_id=BOI, image_end_token_id=EOI,
        video_start_token_id=BOV, video_end_token_id=EOV)
    model = Glm4vForConditionalGeneration(config).eval()
    grid = torch.tensor([[1, 4, 4]])  # a 56x56 image (and a 2-frame 56x56 video): 4 merged tokens each
    patches = torch.randn(16, 3 * 2 * 14 * 14)
    # text, <image> x4 (type 1), text, video frame <image> x4 (type 2), text: what Glm4vProcessor writes
    ids = [1, BOI, *[IMAGE] * 4, EOI, 2, BOV, BOI, *[IMAGE] * 4, EOI, 3, EOV, 2]
    types = [0, 0, *[1] * 4, 0, 0, 0, 0, *[2] * 4, 0, 0, 0, 0]
    inputs = {"input_ids": torch.tensor([ids]), "mm_token_type_ids": torch.tensor([types]),
              "pixel_values": patches, "image_grid_thw": grid,
              "pixel_values_videos": patches.clone(), "video_grid_thw": grid}
    print(f"transformers {transformers.__version__}: 4 image tokens + 4 video-frame tokens, both `<|image|>`")
    try:
        with torch.inference_mode():
            model(**inputs)
    except ValueError as exc:
        print(f"BUG: forward with an image and a video fails: {exc}")
        return 1
    print("OK: forward with an image and a video runs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
