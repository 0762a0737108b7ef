"""Minimal reproduction: transformers 5.19's Qwen2-VL places the text after a video too early.

Qwen2-VL gives vision tokens 3-D positions (t, h, w) and starts the text that follows at the largest
vision position + 1 (the original implementation; the Qwen2.5-VL docstring in transformers PR #35569:
"we calculate the text start position_ids as the max vision position_ids plus 1"; vLLM 0.32's
Qwen2VLForConditionalGeneration.get_mrope_input_positions does the same). transformers 5.19's
`Qwen2VLModel.get_rope_index` advances by max(h, w) // merge only, ignoring the temporal extent: for
a video with more temporal patches than merged patches on its longer side (8 frames of 56 x 56:
grid t=4, h=w=2 after merging) every text position after the video is 2 lower than it should be.
The harness sees it as vLLM vs HF prefill differences that start right after the video placeholders
(the video's own positions agree), on `video-more-frames-than-patches` and on `image-and-video`
under processor-options (a smaller max_pixels shrinks the frames' grid below their count).

No model weights: the function is called on a prompt of ids alone.
Run with the project venv:  .venv/bin/python repro/transformers_qwen2vl_video_rope.py
Exit status: 1 while transformers places the text early (the bug), 0 once it matches the rule.
"""
from __future__ import annotations

import sys
from types import SimpleNamespace

import torch
import transformers
from transformers.models.qwen2_vl.modeling_qwen2_vl import Qwen2VLModel

MERGE = 2


def main() -> int:
    grid = torch.tensor([[4, 2 * MERGE, 2 * MERGE]])  # 8 frames of 56 x 56: 4 temporal, 2 x 2 merged patches
    n_video = 4 * 2 * 2
    types = torch.tensor([[0] * 3 + [2] * n_video + [0] * 3])  # text, video, text
    model = SimpleNamespace(config=SimpleNamespace(vision_config=SimpleNamespace(spatial_merge_size=MERGE)),
                            get_vision_position_ids=lambda *a, **k: Qwen2VLModel.get_vision_position_ids(model, *a, **k))
    positions, _ = Qwen2VLModel.get_rope_index(model, torch.zeros_like(types), types, video_grid_thw=grid)
    video = positions[:, 0, 3:3 + n_video]
    first_text_after = positions[:, 0, 3 + n_video].tolist()
    expected = int(video.max()) + 1
    print(f"transformers {transformers.__version__}: video positions t {video[0].unique().tolist()}, "
          f"h {video[1].unique().tolist()}, w {video[2].unique().tolist()}")
    print(f"first text position after the video: {first_text_after}; max vision position + 1 = {expected}")
    if first_text_after == [expected] * 3:
        print("OK: the text after the video starts after the video's last temporal position")
        return 0
    print("BUG: the text after the video starts inside the video's temporal range")
    return 1


if __name__ == "__main__":
    sys.exit(main())
