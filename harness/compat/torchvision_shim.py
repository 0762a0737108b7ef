"""Let a CUDA-only torchvision wheel import on a CPU-only torch.

PyPI's only torchvision for torch 2.13 is a CUDA build whose C ops do not
load on CPU, so `import torchvision` dies registering fake kernels for
`torchvision::nms`/`qnms` ("operator ... does not exist"). transformers'
Qwen2-VL processor and vLLM both import torchvision, so it cannot simply be
removed. Defining the two op schemas before torchvision's first import lets
its pure-torch transforms work (the C ops still do not).

`bootstrap.py` copies this file into the venv's site-packages and adds a
`.pth` line that calls `install()`, so the hook runs in every interpreter of
the venv, including engine subprocesses. The hook is lazy: torch is only
imported when something imports torchvision.
"""
from __future__ import annotations

import importlib.abc
import sys

_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold, float scale, float zero_point) -> Tensor",
)


def define_missing_ops() -> None:
    """Define the op schemas torchvision expects, where its C library did not."""
    import torch

    for schema in _SCHEMAS:
        name, signature = schema.split("(", 1)
        if not hasattr(torch.ops.torchvision, name):
            torch.library.define(f"torchvision::{name}", f"({signature}")


class _BeforeTorchvision(importlib.abc.MetaPathFinder):
    """Runs `define_missing_ops` once, just before torchvision is imported."""

    def find_spec(self, fullname, path, target=None):  # noqa: ANN001 - importlib protocol
        if fullname == "torchvision":
            sys.meta_path.remove(self)
            define_missing_ops()
        return None


def install() -> None:
    if not any(isinstance(f, _BeforeTorchvision) for f in sys.meta_path):
        sys.meta_path.insert(0, _BeforeTorchvision())
