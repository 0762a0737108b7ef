"""Minimal reproduction: transformers 5.19's Cohere2 Vision ignores the text model's `logit_scale`.

Cohere's language models multiply the output head's logits by `logit_scale` (Cohere2ForCausalLM:
`logits = logits * self.logit_scale  # main diff from Llama`; vLLM 0.32's Cohere2VisionForConditionalGeneration
passes `scale=config.logit_scale` to its logits processor through the same Cohere2 text model).
transformers 5.19's Cohere2VisionForConditionalGeneration computes `logits = self.lm_head(hidden_states)`
and never applies it, so its logits (and every logprob, and sampling) differ from Cohere2ForCausalLM's on
the same weights by that factor; vLLM and transformers disagree on every prompt logprob of a Cohere2
Vision checkpoint whose `logit_scale` is not 1. The harness saw prefill logprobs ~3x apart with 0.3.

A random 1-layer model built here from a config (no download), text only: the vision model's logits
are compared with those of Cohere2ForCausalLM loaded from the same language-model weights.
Run with the project venv:  .venv/bin/python repro/transformers_cohere2_vision_logit_scale.py
Exit status: 1 while the vision model's logits are unscaled (the bug), 0 once they match.
"""
from __future__ import annotations

import sys

import torch
import transformers
from transformers import Cohere2Config, Cohere2ForCausalLM, Cohere2VisionConfig, Cohere2VisionForConditionalGeneration

SCALE = 0.25


def main() -> int:
    torch.manual_seed(0)
    text = {"vocab_size": 64, "hidden_size": 64, "intermediate_size": 64, "num_hidden_layers": 1,
            "num_attention_heads": 1, "num_key_value_heads": 1, "layer_types": ["full_attention"],
            "logit_scale": SCALE, "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2}
    vision = Cohere2VisionForConditionalGeneration(Cohere2VisionConfig(
        text_config={"model_type": "cohere2", **text}, image_token_id=3, alignment_intermediate_size=64,
        vision_config={"model_type": "siglip_vision_model", "hidden_size": 32, "intermediate_size": 32,
                       "num_hidden_layers": 1, "num_attention_heads": 1, "image_size": 32,
                       "patch_size": 16})).eval()
    causal = Cohere2ForCausalLM(Cohere2Config(**text)).eval()
    causal.model.load_state_dict(vision.model.language_model.state_dict())
    causal.lm_head.weight.data.copy_(vision.lm_head.weight.data)
    ids = torch.tensor([[1, 10, 20, 30, 40]])
    with torch.inference_mode():
        got, want = vision(input_ids=ids).logits, causal(input_ids=ids).logits
    ratio = (got.abs().sum() / want.abs().sum()).item()
    print(f"transformers {transformers.__version__}: logit_scale={SCALE}; Cohere2Vision logits / "
          f"Cohere2ForCausalLM logits = {ratio:.4f} (1.0 expected)")
    if torch.allclose(got, want, atol=1e-5):
        print("OK: Cohere2 Vision applies logit_scale")
        return 0
    print("BUG: Cohere2 Vision does not apply the text model's logit_scale")
    return 1


if __name__ == "__main__":
    sys.exit(main())
