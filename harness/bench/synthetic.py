"""Synthetic cases for the scaling figures: N scenes drawn with PIL, deterministically.

The scenes come from the trained default model's own data recipe (shapes, words,
colour fields, some text-only), so the model answers them as it answers the
default cases. Case i is the same in every set, so the 4-case set is a prefix of
the 16-case set and the 64-case set: the sets differ only in how many cases run.
"""
from __future__ import annotations

from pathlib import Path

import yaml

SEED_BASE = 7_000_000  # far from the training seeds, so these are unseen scenes
CASE_FILE = "cases.yaml"


def write_synthetic_cases(out_dir: Path, n: int) -> Path:
    """Write `n` cases (PNG images plus one case file) into `out_dir`; returns the case file."""
    from harness.inputs.models.train_tiny import render, sample  # imports torch: only when cases are drawn

    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    cases = []
    for i in range(n):
        scene, question, _ = sample(SEED_BASE + i)
        case = {"id": f"syn-{i:04d}", "prompt": question, "max_new_tokens": 16, "tags": ["synthetic", scene.kind]}
        image = render(scene)
        if image is not None:
            name = f"images/syn-{i:04d}.png"
            image.save(out_dir / name)
            case["images"] = [name]
        cases.append(case)
    path = out_dir / CASE_FILE
    path.write_text(yaml.safe_dump({"cases": cases}, sort_keys=False))
    return path
