"""Minimal reproduction: vLLM 0.32's LLaVA-NeXT-Video pooler divides by zero unless image_size >= patch_size**2.

`LlavaNextVideoPooler.__init__` stores `image_size // patch_size**2` and `forward` computes
`shape[1] * self.image_size // self.image_size` (meant to recover the patch grid side): for a vision
tower whose image side is smaller than patch_size**2 pixels (64 px with 16 px patches: 64 // 256 = 0) every
video raises ZeroDivisionError. transformers pools the same config fine (its grid side is
image_size // patch_size). The hub checkpoints pass by luck (336 // 14**2 = 1).

No model weights: the pooler is built from a config and run on random features.
Run with the project venv:  .venv/bin/python repro/vllm_llava_next_video_pooling_zero_division.py
Exit status: 1 while the pooler fails on a 64 px / 16 px tower (the bug), 0 once it pools to 2x2.
"""
from __future__ import annotations

import sys

import torch
from transformers import LlavaNextVideoConfig
from vllm.model_executor.models.llava_next_video import LlavaNextVideoPooler


def main() -> int:
    config = LlavaNextVideoConfig(vision_config={"model_type": "clip_vision_model", "image_size": 64, "patch_size": 16,
                                                 "hidden_size": 64, "num_attention_heads": 1},
                                  spatial_pool_mode="average", spatial_pool_stride=2)
    features = torch.randn(3, 16, 64)  # 3 frames, 4x4 patches (CLS dropped), hidden 64
    try:
        pooled = LlavaNextVideoPooler(config)(features)
    except ZeroDivisionError as e:
        print(f"BUG: pooling 4x4 patch features of a 64 px / 16 px tower: ZeroDivisionError: {e}")
        return 1
    print(f"OK: pooled to {tuple(pooled.shape)}")
    return 0 if pooled.shape == (3, 4, 64) else 1


if __name__ == "__main__":
    sys.exit(main())
