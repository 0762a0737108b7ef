"""Minimal reproduction: after vLLM refuses a request whose images made it too long, the same images fail.

One image, one short prompt, on the built-in tiny Qwen2-VL with vLLM's engine core in process:

  1. the prompt's text padded to max_model_len - 1 tokens, with the image: its text fits, the image's
     placeholder expansion does not. vLLM processes the image, then refuses the request
     (VLLMValidationError, a clean per-request error, as it should).
  2. the same image in a short, valid prompt. vLLM's front-end cache believes the engine core has the
     image (it kept it from step 1) and sends only its hash; the engine core never received it:
     MultiModalCacheMissError ("P0/P1 cache drift"). Every later request with that image fails the same
     way until LLM.reset_mm_cache() (vLLM issue #43941's path; #28525 and #57833 are its relatives).
  3. control: after reset_mm_cache(), the same valid request succeeds.

Run with the project venv:  .venv/bin/python repro/vllm_reject_then_reuse.py
Exit status: 1 while step 2 fails (the bug), 0 once it succeeds, 2 if step 1 or 3 goes wrong (something
else is broken).
"""
from __future__ import annotations

import os
import sys

# Before vllm is imported: loopback for its queues, in-process engine core, no hub.
os.environ.setdefault("VLLM_HOST_IP", "127.0.0.1")
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from PIL import Image  # noqa: E402
from vllm import LLM, SamplingParams  # noqa: E402
from vllm.exceptions import VLLMClientError  # noqa: E402

from harness.inputs.models import DEFAULT_MODEL, resolve_model  # noqa: E402

PROMPT = "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>What shape is this?<|im_end|>\n" \
         "<|im_start|>assistant\n"


def main() -> int:
    llm = LLM(model=resolve_model(DEFAULT_MODEL), dtype="float32", enforce_eager=True, max_model_len=512,
              limit_mm_per_prompt={"image": 1})
    params = SamplingParams(temperature=0.0, max_tokens=4)
    image = Image.new("RGB", (112, 112), (200, 40, 40))
    ids = llm.get_tokenizer().encode(PROMPT, add_special_tokens=False)
    too_long = {"prompt_token_ids": ids[-1:] * (512 - 1 - len(ids)) + ids, "multi_modal_data": {"image": image}}
    valid = {"prompt": PROMPT, "multi_modal_data": {"image": image}}
    try:
        llm.generate([too_long], params, use_tqdm=False)
        print("step 1: the over-long request was accepted (expected a refusal)")
        return 2
    except VLLMClientError as exc:
        print(f"step 1: refused as expected: {type(exc).__name__}: {str(exc)[:100]}")
    try:
        text = llm.generate([valid], params, use_tqdm=False)[0].outputs[0].text
        print(f"step 2: the same image in a valid request succeeded ({text!r}): fixed")
        return 0 if control(llm, valid, params) else 2
    except Exception as exc:  # the bug: MultiModalCacheMissError
        print(f"step 2: the same image in a valid request failed: {type(exc).__name__}: {str(exc)[:160]}")
        return 1 if control(llm, valid, params) else 2


def control(llm: LLM, valid: dict, params: SamplingParams) -> bool:
    engine = llm.llm_engine  # a request that raised stays in the engine: abort it, or the next one waits on it
    engine.abort_request(list(engine.output_processor.request_states), internal=True)
    llm.reset_mm_cache()
    text = llm.generate([valid], params, use_tqdm=False)[0].outputs[0].text
    print(f"step 3: after reset_mm_cache() the same request succeeds ({text!r})")
    return True


if __name__ == "__main__":
    sys.exit(main())
