"""Minimal reproduction: transformers 5.19's Llama 4 rejects its own image processor's output in float32.

`Llama4ImageProcessor.rescale_and_normalize` rescales and normalizes in bfloat16 ("as in the original
implementation") and returns bfloat16 `pixel_values` whatever the model's dtype. The processor's output
fed to `Llama4ForConditionalGeneration` loaded in float32 (or float64) then fails in the vision tower's
first linear layer (`expected m1 and m2 to have the same dtype, but got: c10::BFloat16 != float`):
unlike most VLMs (InternVL: `pixel_values.to(dtype=self.dtype)`), Llama 4's `get_image_features` /
vision model never casts the pixels to its own dtype. A user who runs the model in float32 (the
reference dtype of parity tests, CPU inference) must cast the pixels by hand.

A tiny random Llama 4 (one vision and one text layer), built in memory; no hub access.
Run with the project venv:  .venv/bin/python repro/transformers_llama4_bf16_pixels.py
Exit status: 1 while the float32 model rejects the processor's pixels (the bug), 0 once it runs.
"""
from __future__ import annotations

import sys

import numpy as np
import torch
import transformers
from PIL import Image
from transformers import Llama4Config, Llama4ForConditionalGeneration, Llama4ImageProcessor


def main() -> int:
    pixels = Llama4ImageProcessor(size={"height": 64, "width": 64}, max_patches=4)(
        Image.fromarray(np.full((64, 64, 3), 128, np.uint8)), return_tensors="pt")["pixel_values"]
    config = Llama4Config(
        text_config={"vocab_size": 64, "hidden_size": 64, "intermediate_size": 64, "intermediate_size_mlp": 64,
                     "num_hidden_layers": 1, "num_attention_heads": 1, "num_key_value_heads": 1, "head_dim": 64,
                     "num_local_experts": 2},
        vision_config={"hidden_size": 64, "intermediate_size": 256, "num_hidden_layers": 1,
                       "num_attention_heads": 1, "image_size": 64, "patch_size": 8, "projector_input_dim": 64,
                       "projector_output_dim": 64, "vision_output_dim": 64},
        image_token_index=63)
    torch.manual_seed(0)
    model = Llama4ForConditionalGeneration(config).to(torch.float32).eval()
    print(f"transformers {transformers.__version__}: processor pixel_values dtype {pixels.dtype}, "
          f"model dtype {model.dtype}")
    try:
        with torch.inference_mode():
            features = model.get_image_features(pixels)
    except RuntimeError as exc:
        print(f"BUG: the float32 model rejects the processor's pixels: {exc}")
        return 1
    print(f"OK: image features {tuple(getattr(features, 'pooler_output', features).shape)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
