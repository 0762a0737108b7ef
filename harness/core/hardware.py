"""What a number was computed on: the floating-point kernels, and so the last bits of a float32
result, depend on the CPU's vector extensions, the BLAS backend and the thread count. Recorded with
stored references and runs; never a reason to distrust a result (verdicts are judged within a floor)."""
from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

# The extensions that change which kernels torch and oneDNN pick (and so the last bits of a result).
VECTOR_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16",
                "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8", "asimd", "sve", "sve2")


def cpu() -> dict[str, Any]:
    """CPU model, its vector extensions and core count (Linux /proc/cpuinfo; elsewhere what platform says)."""
    info: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():  # the first core's lines describe them all
            key, _, value = line.partition(":")
            info.setdefault(key.strip().lower(), value.strip())
    except OSError:
        pass
    model = info.get("model name") or info.get("cpu model") or platform.processor() or platform.machine()
    flags = set((info.get("flags") or info.get("features") or "").split())
    return {"cpu": model, "vector_extensions": [f for f in VECTOR_FLAGS if f in flags], "cores": os.cpu_count()}


def machine(torch: Any = None) -> dict[str, Any]:
    """The CPU, and with torch (already imported by the caller) its threads, BLAS and GPU."""
    found = cpu()
    if torch is not None:
        config = torch.__config__.show()
        found.update(
            torch_threads=torch.get_num_threads(),
            blas=next((b for b in ("mkl", "openblas", "accelerate", "blis") if f"blas_info={b}" in config.lower()),
                      None),
            onednn=torch.backends.mkldnn.is_available(),
            cpu_capability=next((line.split(":", 1)[1].strip() for line in config.splitlines()
                                 if "CPU capability usage" in line), None),
            gpu=torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        )
    return found
