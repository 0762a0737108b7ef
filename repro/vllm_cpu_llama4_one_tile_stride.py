"""Minimal reproduction: vLLM 0.32 CPU fails Llama 4's vision patch embedding for a one-tile encoder batch.

`Llama4UnfoldConvolution.forward` (vllm/model_executor/models/mllama4.py) unfolds the tiles into
patches and passes `hidden_states.permute(0, 2, 1)` (shape tiles x patches x pixels, last stride =
patches) to its linear layer. On the CPU the unquantized linear is oneDNN's `onednn_mm`
(vllm/_custom_ops.py), which reshapes its input to 2-D and requires a unit last stride. With two or more
tiles the reshape copies (contiguous, fine); with exactly one tile it is a view whose last stride is the
patch count, and the kernel aborts: `Expected a.stride(-1) == 1 to be true, but got false`, killing the
engine. One tile in an encoder batch is an image that fits one tile (Llama 4 adds no global view then)
encoded by itself, e.g. a 28x28 image sent alone; the harness hit it on `tiny-png` under `prefix-cache`
(its warm-up image is new and goes alone), which restarted the engine.

This runs the layer's exact CPU path: the permuted unfold output through vLLM's CPU GEMM dispatch
(`dispatch_cpu_unquantized_gemm`), for 2 tiles and for 1. No model, no engine.
Run with the project venv:  .venv/bin/python repro/vllm_cpu_llama4_one_tile_stride.py
Exit status: 1 while one tile fails (the bug), 0 once it gives the same patches as torch.
"""
from __future__ import annotations

import sys

import torch
import vllm
from vllm.model_executor.layers.utils import dispatch_cpu_unquantized_gemm

PATCH, TILE, HIDDEN = 8, 64, 64


def main() -> int:
    torch.manual_seed(0)
    linear = torch.nn.Linear(3 * PATCH * PATCH, HIDDEN, bias=False)
    reference_weight = linear.weight.detach().clone()
    dispatch_cpu_unquantized_gemm(linear, remove_weight=False)
    unfold = torch.nn.Unfold(kernel_size=(PATCH, PATCH), stride=PATCH)
    failed = False
    for tiles in (2, 1):
        pixels = torch.randn(tiles, 3, TILE, TILE)
        patches = unfold(pixels).permute(0, 2, 1)  # as Llama4UnfoldConvolution.forward
        try:
            out = linear.cpu_linear(patches, linear.weight, None)
        except RuntimeError as exc:
            print(f"vLLM {vllm.__version__}: {tiles} tile(s), input stride {patches.stride()}: BUG: {exc}".splitlines()[0])
            failed = True
            continue
        err = (out - patches @ reference_weight.t()).abs().max().item()
        print(f"vLLM {vllm.__version__}: {tiles} tile(s), input stride {patches.stride()}: OK (max |diff| {err:.2e})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
