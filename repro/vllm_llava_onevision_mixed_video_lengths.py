"""Minimal reproduction: vLLM 0.32's LLaVA-OneVision returns 3-D video embeddings when videos differ in length.

`LlavaOnevisionForConditionalGeneration._process_video_pixels` has two paths. When every video in the
encoder batch has the same frame count, pixel_values_videos arrive as one 5-D tensor and each video's
embeddings come back 2-D (tokens, hidden). When the frame counts differ they arrive as a list, and that
path builds each video as `torch.cat((embeds.reshape(1, n, -1), image_newline), dim=1)`: shape
(1, tokens, hidden), 3-D. The model runner then fails `sanity_check_mm_encoder_outputs` ("Expected
multimodal embeddings to be a sequence of 2D tensors, but got ... [1, 33, 128], [1, 21, 128] ..."), and
the whole batch errors. The harness sees every video case of a batched run error (its log shows
"Encoder cache miss"); one video alone, or videos of equal length, work and match transformers.

No model weights: the method is called on a stub with an identity vision tower and projector.
Run with the project venv:  .venv/bin/python repro/vllm_llava_onevision_mixed_video_lengths.py
Exit status: 1 while a video of a mixed-length batch comes back 3-D (the bug), 0 once every one is 2-D.
"""
from __future__ import annotations

import sys
from types import SimpleNamespace

import torch
from vllm.model_executor.models.llava_onevision import LlavaOnevisionForConditionalGeneration as Model

HIDDEN, TILE, PATCH = 8, 64, 16
GRID = TILE // PATCH


def main() -> int:
    stub = SimpleNamespace(
        config=SimpleNamespace(vision_config=SimpleNamespace(image_size=TILE, patch_size=PATCH),
                               vision_feature_select_strategy="full"),
        # (frames, 3, 64, 64) -> (frames, 16 patches, HIDDEN): any per-patch features do
        vision_tower=lambda px, **_: px[:, :1].reshape(px.shape[0], GRID, PATCH, GRID, PATCH)
        .mean((2, 4)).reshape(px.shape[0], GRID * GRID, 1).expand(-1, -1, HIDDEN),
        multi_modal_projector=lambda x: x,
        image_newline=torch.zeros(HIDDEN),
    )
    stub.apply_pooling = lambda x, stride=2: Model.apply_pooling(stub, x, stride)
    stub._video_pixels_to_features = lambda tower, px: Model._video_pixels_to_features(stub, tower, px)
    results = {}
    for name, frames in (("equal lengths (5-D tensor)", [4, 4]), ("mixed lengths (list)", [8, 5, 4])):
        videos = [torch.randn(n, 3, TILE, TILE) for n in frames]
        batch = torch.stack(videos) if len(set(frames)) == 1 else videos
        out = Model._process_video_pixels(stub, {"pixel_values_videos": batch})
        shapes = [tuple(e.shape) for e in out]
        results[name] = all(len(s) == 2 for s in shapes)
        print(f"{name}: frames {frames} -> embeddings {shapes}")
    if all(results.values()):
        print("OK: every video's embeddings are 2-D (tokens, hidden)")
        return 0
    print("BUG: videos of different lengths come back 3-D (1, tokens, hidden); the model runner rejects them")
    return 1


if __name__ == "__main__":
    sys.exit(main())
