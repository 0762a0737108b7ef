"""Minimal reproduction: vLLM on the CPU fails every seeded sampled request whose sampled token is discarded.

When a step computes only part of a request's prompt (a chunked prefill), the runner discards the token it
sampled for it and rewinds the request's seeded generator: `gen.set_offset(gen.get_offset() - 4)`
(vllm/v1/worker/gpu_model_runner.py, `_bookkeeping_sync`, which the CPU runner inherits). A CUDA (Philox)
generator has an offset; a CPU generator has none, and torch raises "CPU Generator does not use offset". So
on the CPU a request with a `seed` fails as soon as its prompt is prefilled in more than one step; the same
request without a seed, or prefilled in one step, succeeds. Found by vlm-parity's sampling and n-best
variants on tiny-lfm2-vl-1head (a hybrid model, whose prompts vLLM prefills in chunks).

Run with the project venv:  .venv/bin/python repro/vllm_cpu_seeded_sampling_discarded_step.py
Exit status: 1 while the seeded request fails (the bug), 0 once it succeeds, 2 if the controls go wrong.
"""
from __future__ import annotations

import os
import sys

os.environ.setdefault("VLLM_HOST_IP", "127.0.0.1")
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from vllm import LLM, SamplingParams  # noqa: E402

from harness.inputs.models import DEFAULT_MODEL, resolve_model  # noqa: E402

PROMPT = "<|im_start|>user\nDescribe the colours of a rainbow, one by one, from the outside in.<|im_end|>\n" \
         "<|im_start|>assistant\n"


def main() -> int:
    # A prefill budget of 16 tokens: the prompt (about 30 tokens) is prefilled in two or more steps.
    llm = LLM(model=resolve_model(DEFAULT_MODEL), dtype="float32", enforce_eager=True, max_model_len=512,
              enable_chunked_prefill=True, max_num_batched_tokens=16, max_num_seqs=16)
    unseeded = SamplingParams(temperature=0.8, max_tokens=4)
    seeded = SamplingParams(temperature=0.8, max_tokens=4, seed=1234)
    try:
        text = llm.generate([PROMPT], unseeded, use_tqdm=False)[0].outputs[0].text
        print(f"control: the unseeded request succeeds ({text!r})")
    except Exception as exc:
        print(f"control failed: {type(exc).__name__}: {exc}")
        return 2
    try:
        text = llm.generate([PROMPT], seeded, use_tqdm=False)[0].outputs[0].text
    except RuntimeError as exc:
        print(f"the seeded request fails: {type(exc).__name__}: {exc}")
        return 1
    print(f"the seeded request succeeds ({text!r}): fixed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
