"""Minimal reproduction: transformers 5.19's Mistral 3 crashes on an image that gives one image token.

`Mistral3Model.get_image_features` projects the patch features to (tokens, hidden) and then splits
`image_features.squeeze(0)` by image: when the request's images give exactly one merged token in all
(one image no larger than one merged cell: patch_size x spatial_merge_size, 28 px for the hub
checkpoints' 14 px patches, 32 px here), `squeeze(0)` drops the token axis instead of a batch axis and
`torch.split` fails: `split_with_sizes expects split_sizes to sum exactly to <hidden> ... but got
split_sizes=[1]`. The harness sees it as the HF reference failing the `tiny-png` case (28x28) on a tiny
Mistral 3; vLLM 0.32 serves the same request.

A tiny random Mistral 3 and a PixtralProcessor built in memory (no hub access).
Run with the project venv:  .venv/bin/python repro/transformers_mistral3_one_token_image.py
Exit status: 1 while the one-token image crashes (the bug), 0 once its feature comes back.
"""
from __future__ import annotations

import sys

import numpy as np
import torch
import transformers
from PIL import Image
from transformers import Mistral3Config, Mistral3ForConditionalGeneration, PixtralImageProcessor


def main() -> int:
    config = Mistral3Config(
        text_config={"model_type": "mistral", "vocab_size": 64, "hidden_size": 128, "intermediate_size": 64,
                     "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 64},
        vision_config={"hidden_size": 64, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 1,
                       "image_size": 64, "patch_size": 16},
        image_token_index=10, spatial_merge_size=2)
    torch.manual_seed(0)
    model = Mistral3ForConditionalGeneration(config).eval()
    # PixtralProcessor hands the image processor patch_size x spatial_merge_size (one merged cell).
    processor = PixtralImageProcessor(size={"longest_edge": 64}, patch_size={"height": 32, "width": 32})
    image = Image.fromarray(np.full((28, 28, 3), 128, np.uint8))
    inputs = processor(image, return_tensors="pt")
    print(f"transformers {transformers.__version__}: a 28x28 image, pixel_values {tuple(inputs['pixel_values'].shape)}, "
          f"image_sizes {inputs['image_sizes'].tolist()} -> 1 image token")
    try:
        with torch.inference_mode():
            features = model.get_image_features(inputs["pixel_values"], inputs["image_sizes"]).pooler_output
    except RuntimeError as exc:
        print(f"BUG: get_image_features fails on a one-token image: {exc}")
        return 1
    print(f"OK: features {[tuple(f.shape) for f in features]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
