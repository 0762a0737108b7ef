"""Start-up is paid once: the CLI and the engine worker import no heavy library until the code that needs it runs.

Every `vlm-parity run` and every engine worker process pays its imports again, and a stored-reference run is
measured against the engine alone (`vlm-parity bench --parts stored`). These libraries are imported where
they are used: pandas and pyarrow when tables are written, jinja2 and plotly when the report is rendered,
rouge-score and nltk when two output texts differ, each decoder's library when that decoder runs, torch,
transformers, vLLM, SGLang and httpx inside the adapter that drives them.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

HEAVY = ("pandas", "pyarrow", "plotly", "jinja2", "rouge_score", "nltk", "cv2", "simplejpeg", "transformers", "torch",
         "torchvision", "vllm", "sglang", "httpx")


def _importers(importtime: str, name: str) -> str:
    """`name <- who imported it <- ...` from `python -X importtime` output (children are printed before their
    parent, one indent deeper), so a failure names the harness module to make lazy."""
    rows = [(len(m.group(1)), m.group(2)) for m in re.finditer(r"^import time:.*?\|.*?\|( *)(\S+)$", importtime, re.M)]
    first = next(i for i, (_, module) in enumerate(rows) if module == name)
    chain, depth = [name], rows[first][0]
    for indent, module in rows[first + 1:]:
        if indent < depth:
            chain.append(module)
            depth = indent
    return " <- ".join(chain)


@pytest.mark.parametrize("module", ["harness.cli", "harness.engines.worker"])
def test_import_pulls_in_no_heavy_library(module: str) -> None:
    code = f"import json, sys, {module}; print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}})))"
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    loaded = set(json.loads(proc.stdout.splitlines()[-1]))
    heavy = sorted(loaded.intersection(HEAVY))
    assert not heavy, f"import {module} imports {', '.join(heavy)}:\n" + "\n".join(
        _importers(proc.stderr, name) for name in heavy)
