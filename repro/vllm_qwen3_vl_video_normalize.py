"""Minimal reproduction: vLLM 0.32 normalizes Qwen3-VL video frames with the IMAGE processor's mean and std.

vLLM 0.32 turns `mm_device_do_normalize` on by default for Qwen3-VL: its front end hands the vision tower
raw pixels, and the tower's one `input_norm` (vllm/model_executor/layers/fusion/mm_input_norm.py,
`_load_norm_params`) rescales and normalizes them with the `image_processor` section of
processor_config.json, for images and videos alike. transformers normalizes video frames with the
`video_processor`'s own image_mean / image_std. When the two differ (here the image processor keeps
Qwen2VLImageProcessor's CLIP defaults, [0.481, 0.458, 0.408] / [0.269, 0.261, 0.276], and the video
processor Qwen3VLVideoProcessor's [0.5] * 3 / [0.5] * 3), every video token reaches the model with other
pixels in vLLM than in transformers. Published Qwen3-VL checkpoints set 0.5 for both, which hides it.

A tiny random Qwen3-VL (the harness's tiny-qwen3-vl recipe, its image processor's mean/std set back to the
CLIP defaults), one image prompt (the control) and one 8-frame video prompt; prompt logprobs from vLLM
(CPU, float32, defaults) against transformers' forward on the same ids.

Run from the repository root with the project venv:  .venv/bin/python repro/vllm_qwen3_vl_video_normalize.py
Exit status: 1 while the video prompt differs (the bug), 0 once it matches; 2 if the image control differs
or the prompt ids do not match (something else is wrong).
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("VLLM_HOST_IP", "127.0.0.1")
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

sys.path.insert(0, str(Path.cwd()))
from harness.inputs.models.zoo.qwen3_vl import RECIPES  # noqa: E402

CLIP_MEAN, CLIP_STD = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]
TURN = "<|im_start|>user\n{}What is shown?<|im_end|>\n<|im_start|>assistant\n"
FPS = 24.0


def frames() -> np.ndarray:
    """8 frames of 96 x 96: a bright square moving right on a dark ground."""
    video = np.full((8, 96, 96, 3), 30, dtype=np.uint8)
    for i in range(8):
        video[i, 30:60, 8 * i:8 * i + 30] = (220, 60, 40)
    return video


def hf_logprobs(model_dir: str, prompt: str, media: dict) -> tuple[list[int], np.ndarray]:
    from transformers import AutoModelForImageTextToText, AutoProcessor
    from transformers.video_utils import VideoMetadata

    processor = AutoProcessor.from_pretrained(model_dir)
    model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=torch.float32).eval()
    kwargs = {}
    if "video" in media:
        video = media["video"]
        n = len(video)
        kwargs = {"videos": [video], "do_sample_frames": False, "video_metadata": [VideoMetadata(
            total_num_frames=n, fps=FPS, frames_indices=list(range(n)), duration=n / FPS)]}
    else:
        kwargs = {"images": [media["image"]]}
    inputs = processor(text=[prompt], return_tensors="pt", **kwargs)
    with torch.inference_mode():
        logits = model(**inputs).logits[0].float()
    ids = inputs["input_ids"][0]
    logprobs = torch.log_softmax(logits, -1)[:-1].gather(1, ids[1:, None])[:, 0]
    return ids.tolist(), logprobs.numpy()


def main() -> int:
    model_dir = tempfile.mkdtemp(prefix="qwen3vl-norm-")
    RECIPES[0].build(Path(model_dir))
    config_path = Path(model_dir) / "processor_config.json"
    config = json.loads(config_path.read_text())
    config["image_processor"].update(image_mean=CLIP_MEAN, image_std=CLIP_STD)
    config_path.write_text(json.dumps(config, indent=2))
    print("image processor mean/std:", config["image_processor"]["image_mean"], config["image_processor"]["image_std"])
    print("video processor mean/std:", config["video_processor"]["image_mean"], config["video_processor"]["image_std"])

    video = frames()
    image = Image.fromarray(video[3])
    cases = {
        "image": (TURN.format("<|vision_start|><|image_pad|><|vision_end|>"), {"image": image}),
        "video": (TURN.format("<|vision_start|><|video_pad|><|vision_end|>"), {"video": video}),
    }
    reference = {name: hf_logprobs(model_dir, prompt, media) for name, (prompt, media) in cases.items()}

    from vllm import LLM, SamplingParams

    llm = LLM(model=model_dir, dtype="float32", enforce_eager=True, max_model_len=1024, seed=0)
    print("vLLM mm_device_do_normalize:", llm.llm_engine.model_config.multimodal_config.mm_device_do_normalize)
    params = SamplingParams(temperature=0.0, max_tokens=1, prompt_logprobs=0)
    requests = []
    for name, (prompt, media) in cases.items():
        if name == "video":
            n = len(video)
            data = {"video": [(video, {"fps": FPS, "total_num_frames": n, "frames_indices": list(range(n)),
                                       "duration": n / FPS, "video_backend": "opencv", "do_sample_frames": False})]}
        else:
            data = {"image": [image]}
        requests.append({"prompt": prompt, "multi_modal_data": data})
    outputs = llm.generate(requests, params, use_tqdm=False)

    worst = {}
    for (name, _), out in zip(cases.items(), outputs):
        ids, ref = reference[name]
        if list(out.prompt_token_ids) != ids:
            print(f"{name}: prompt ids differ ({len(out.prompt_token_ids)} vs {len(ids)}): cannot compare")
            return 2
        engine = np.array([lp[tok].logprob for lp, tok in zip(out.prompt_logprobs[1:], ids[1:])])
        worst[name] = float(np.abs(engine - ref).max())
        print(f"{name}: {len(ids)} prompt tokens, max |vLLM - transformers| prompt logprob = {worst[name]:.3g}")
    if worst["image"] > 1e-3:
        print("the image control differs too: something other than video normalization is wrong")
        return 2
    if worst["video"] > 1e-3:
        print("BUG: video frames normalized with the image processor's mean/std (vLLM), not the video "
              "processor's (transformers)")
        return 1
    print("OK: video prompt logprobs match")
    return 0


if __name__ == "__main__":
    sys.exit(main())
