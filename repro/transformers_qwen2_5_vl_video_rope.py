"""Minimal reproduction: transformers 5.19's Qwen2.5-VL places the text after a video too early.

Qwen2.5-VL gives a video's tokens 3-D positions (t, h, w) where the temporal index of grid frame i is
int(i * tokens_per_second * second_per_grid_ts) (2 per frame pair for a checkpoint's tokens_per_second 2 at
the default 2 fps), and starts the text after the video at the largest vision position + 1 (the original
implementation, and the Qwen2.5-VL docstring in transformers PR #35569: "we calculate the text start
position_ids as the max vision position_ids plus 1"; vLLM 0.32's Qwen2_5_VLForConditionalGeneration
.get_mrope_input_positions does the same). transformers 5.19's `Qwen2_5_VLModel.get_rope_index` advances
by max(h, w) // merge only, ignoring the temporal extent: 8 frames at 2 fps, 56 x 56 (grid t=4, 2 x 2 merged
patches) reach temporal position 6, yet the text resumes at 2. The same bug as Qwen2-VL's
(repro/transformers_qwen2vl_video_rope.py), but Qwen2.5-VL's time scaling makes it bite on ordinary videos:
any video whose (t - 1) * tokens_per_second * second_per_grid_ts reaches max(h, w) // merge.

No model weights: the function is called on a prompt of ids alone.
Run with the project venv:  .venv/bin/python repro/transformers_qwen2_5_vl_video_rope.py
Exit status: 1 while transformers places the text early (the bug), 0 once it matches the rule.
"""
from __future__ import annotations

import sys
from types import SimpleNamespace

import torch
import transformers
from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VLModel

MERGE = 2


def main() -> int:
    grid = torch.tensor([[4, 2 * MERGE, 2 * MERGE]])  # 8 frames of 56 x 56: 4 temporal, 2 x 2 merged patches
    n_video = 4 * 2 * 2
    types = torch.tensor([[0] * 3 + [2] * n_video + [0] * 3])  # text, video, text
    config = SimpleNamespace(vision_config=SimpleNamespace(spatial_merge_size=MERGE, tokens_per_second=2))
    model = SimpleNamespace(config=config)
    model.get_vision_position_ids = lambda *a, **k: Qwen2_5_VLModel.get_vision_position_ids(model, *a, **k)
    positions, _ = Qwen2_5_VLModel.get_rope_index(model, torch.zeros_like(types), types, video_grid_thw=grid,
                                                  second_per_grid_ts=torch.tensor([1.0]))  # 2 frames per grid at 2 fps
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
