"""Minimal reproduction: vLLM 0.32 under-counts LLaVA-OneVision's largest image, so chunked prefill refuses images.

`LlavaOnevisionProcessingInfo.get_image_size_with_most_features` returns a hard-coded 1153x944
("found via processor tests" for the hub checkpoints' 384 px tiles and 36 pinpoints), and vLLM sizes the
encoder cache from the tokens of that image. With any other tile size or pinpoints that image is not the
largest: on the tiny recipe (64 px tiles, 1..4 x 1..4 pinpoints, anyres_max_9) it gives 159 tokens while a
213x320 photo gives 192 and a square one 172, so with a small prefill budget (chunked prefill) vLLM refuses
them: "The decoder prompt contains a(n) image item with 172 embedding tokens, which exceeds the
pre-allocated encoder cache size 159". The processor's own count (transformers) agrees with vLLM's
per-image count; only the maximum is wrong.

No model weights: the processing info is called on a stub holding the config.
Run with the project venv:  .venv/bin/python repro/vllm_llava_onevision_largest_image.py
Exit status: 1 while some image gives more tokens than the "largest" one (the bug), 0 otherwise.
"""
from __future__ import annotations

import sys
from types import SimpleNamespace

from transformers import LlavaOnevisionConfig
from vllm.model_executor.models.llava_onevision import LlavaOnevisionProcessingInfo as Info
from vllm.model_executor.models.vision import get_vision_encoder_info

TILE = 64


def main() -> int:
    config = LlavaOnevisionConfig(
        vision_config={"model_type": "siglip_vision_model", "hidden_size": 64, "intermediate_size": 128,
                       "num_hidden_layers": 2, "num_attention_heads": 1, "image_size": TILE, "patch_size": 16},
        text_config={"model_type": "qwen2", "hidden_size": 128, "num_attention_heads": 2},
        image_grid_pinpoints=[[TILE * h, TILE * w] for h in range(1, 5) for w in range(1, 5)],
        vision_feature_select_strategy="full", vision_feature_layer=-1)
    info = SimpleNamespace(get_hf_config=lambda: config, get_vision_encoder_info=lambda: get_vision_encoder_info(config))
    info._get_num_unpadded_features = lambda **kw: Info._get_num_unpadded_features(info, **kw)

    def tokens(width: int, height: int) -> int:
        return Info.get_num_image_tokens(info, image_width=width, image_height=height)

    largest = Info.get_image_size_with_most_features(info)
    claimed = tokens(largest.width, largest.height)
    sizes = [(w, h) for w in range(16, 1025, 16) for h in range(16, 1025, 16)] + [(213, 320), (256, 256)]
    worst = max(sizes, key=lambda s: tokens(*s))
    print(f"'largest' image {largest.width}x{largest.height}: {claimed} tokens; "
          f"213x320: {tokens(213, 320)}; 256x256: {tokens(256, 256)}; max found {worst[0]}x{worst[1]}: {tokens(*worst)}")
    if tokens(*worst) > claimed:
        print("BUG: images exceed the token count vLLM sizes its encoder cache for")
        return 1
    print("OK: no image gives more tokens than the largest one")
    return 0


if __name__ == "__main__":
    sys.exit(main())
