"""Qwen3-VL-MoE: Qwen3-VL's vision tower, deepstack and interleaved M-RoPE over a mixture-of-experts text model.

As `qwen3_vl` (same tokenizer, template, processor and vision tower), but each text layer's MLP is a
top-2-of-4 sparse MoE block (softmax router, top-k weights renormalized). The experts are fused 3-D
tensors; transformers 5.19 saves them in its in-memory layout (`gate_up_proj` [experts, 2 x moe_intermediate,
hidden]) while the hub checkpoints, and vLLM 0.32 (`is_fused_checkpoint_transposed`), have the last two
dimensions swapped: the hook swaps them back (transformers transposes on load whenever the shape differs from
its own, so moe_intermediate_size 96 (and twice it) differs from hidden 128 to keep that unambiguous). vLLM reads
`norm_topk_prob`, which transformers' config does not define (its router always renormalizes): set to match.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from harness.inputs.models.zoo.qwen3_vl import EMBEDS_WHY, TEXT, VISION, qwen3_vl_recipe

MOE_TEXT = {
    **TEXT,
    "num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 96, "decoder_sparse_step": 1,
    "norm_topk_prob": True,
    "tie_word_embeddings": False,  # the MoE text config defaults to tied
}


def hub_expert_layout(out_dir: Path) -> None:
    """Swap the fused experts' last two dimensions to the hub layout vLLM loads ([experts, hidden, 2 x inter])."""
    from safetensors.torch import load_file, save_file

    (path,) = sorted(Path(out_dir).glob("*.safetensors"))
    tensors = load_file(path)
    for key, tensor in tensors.items():
        if key.endswith(("mlp.experts.gate_up_proj", "mlp.experts.down_proj")):
            tensors[key] = tensor.transpose(1, 2).contiguous()
    save_file(tensors, path, metadata={"format": "pt"})


QWEN3_VL_MOE = replace(qwen3_vl_recipe(
    "tiny-qwen3-vl-moe", "Qwen3VLMoeForConditionalGeneration",
    "Qwen3-VL-MoE: Qwen3-VL's deepstack ViT and interleaved M-RoPE over a top-2-of-4 MoE text model",
    "Qwen3VLMoeConfig", MOE_TEXT, VISION, EMBEDS_WHY,
), hook=hub_expert_layout)

RECIPES = (QWEN3_VL_MOE,)
