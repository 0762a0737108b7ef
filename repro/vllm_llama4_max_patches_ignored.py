"""Reproduction: vLLM 0.32's Llama 4 ignores a per-request `max_patches` when it splits the pixel values.

`Mllama4MultiModalProcessor._postprocess_hf_mm_data` computes each image's `aspect_ratios` and
`patches_per_image` from `get_max_num_tiles()`, the checkpoint's image processor `max_patches`, not the
request's `mm_processor_kwargs`: the HF processor (called with the request's options) makes 1 tile for a
128x64 image with `max_patches=1`, vLLM expects 1x2 tiles + global = 3 and fails
(`split_with_sizes expects split_sizes to sum exactly to 1 ... got split_sizes=[3]`).
The one-tile stride bug (repro/vllm_cpu_llama4_one_tile_stride.py) hits first on the CPU, so its
fix (a contiguous patch tensor) is applied here to reach this one. Builds the harness's tiny-llama4
(harness/inputs/models/zoo/llama4.py) on first use.
Run from the repository root with the project venv:  .venv/bin/python repro/vllm_llama4_max_patches_ignored.py
Exit status 1 while the bug exists.
"""
import os
import sys

import numpy as np
from PIL import Image

from harness.engines.vllm_offline import CPU_ENV

for k, v in CPU_ENV.items():
    os.environ.setdefault(k, v)
from transformers import AutoProcessor
from vllm import LLM, SamplingParams

from harness.inputs.models import model_dir  # noqa: E402

model = str(model_dir("tiny-llama4"))
if True:  # the stride bug's fix, to reach this bug
    from vllm.model_executor.models import mllama4
    def forward(self, hidden_states):
        return self.linear(self.unfold(hidden_states).permute(0, 2, 1).contiguous())[0]
    mllama4.Llama4UnfoldConvolution.forward = forward
llm = LLM(model, dtype="float32", enforce_eager=True, max_model_len=4096, block_size=32)
prompt = "<|begin_of_text|><|header_start|>user<|header_end|>\n\n<|image|>Describe.<|eot|><|header_start|>assistant<|header_end|>\n\n"
image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 128, 3), dtype=np.uint8))
hf = AutoProcessor.from_pretrained(model)
bad = False
for kw in ({}, {"max_patches": 1}):
    n_hf = len(hf(text=[prompt], images=[image], return_tensors="pt", **kw)["input_ids"][0])
    try:
        out = llm.generate({"prompt": prompt, "multi_modal_data": {"image": image}, "mm_processor_kwargs": kw},
                           SamplingParams(temperature=0, max_tokens=2, logprobs=1))[0]
        print(kw, "HF prompt tokens", n_hf, "vLLM", len(out.prompt_token_ids), out.outputs[0].token_ids)
        bad |= n_hf != len(out.prompt_token_ids)
    except Exception as e:
        print(kw, "HF prompt tokens", n_hf, "vLLM ERROR", type(e).__name__, str(e)[:300])
        bad = True
sys.exit(1 if bad else 0)
