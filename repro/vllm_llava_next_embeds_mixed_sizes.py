"""Minimal reproduction: vLLM 0.32's LLaVA-NeXT refuses precomputed embeddings of images of different sizes.

LLaVA-NeXT's image tokens depend on the image's size (any-resolution tiling, then unpadding), so two
images of different aspect ratios give different numbers of embedding rows (a 256x256 image 88, a 300x200
one 70 with the tiny recipe). vLLM's pixel path handles that, but `LlavaNextImageEmbeddingInputs` declares
`data` as TensorShape("bn", "ifs", "hs") with no dynamic dimension, so a request with two such images as
embeddings (one (rows, hidden) tensor per image, which vLLM otherwise takes and scores exactly like the
pixels) fails validation: "data contains inconsistent shapes: torch.Size([88, 128]) (index 0) vs
torch.Size([70, 128]) (index 1)". LLaVA-OneVision's schema is the same.

No model weights: the schema is constructed directly.
Run with the project venv:  .venv/bin/python repro/vllm_llava_next_embeds_mixed_sizes.py
Exit status: 1 while embeddings of different lengths are refused (the bug), 0 once they are taken.
"""
from __future__ import annotations

import sys

import torch
from vllm.model_executor.models.llava_next import LlavaNextImageEmbeddingInputs


def main() -> int:
    data = [torch.zeros(88, 128), torch.zeros(70, 128)]
    try:
        LlavaNextImageEmbeddingInputs(type="image_embeds", data=data)
    except ValueError as e:
        print(f"BUG: per-image embeddings of 88 and 70 rows refused: {e}")
        return 1
    print("OK: per-image embeddings of different lengths are taken")
    return 0


if __name__ == "__main__":
    sys.exit(main())
