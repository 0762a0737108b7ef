"""The suite drift test measured both ways: clean, and with small engine-side numerical drifts.

Each drift is an engine-side copy of the default model with one part moved by a relative `eps` (random noise of
eps x the tensor's mean magnitude, seeded): the vision tower, the attention output projections, the output head.
vLLM serves the copy, the reference is the built-in model (its stored references). Prints, per run, each metric's
median ratio to the floor against the clean sample's, the shift, the rank test's p-value, whether the suite
drifts, the cells that fail or drift on their own, and the release gate's decision. Figures, not a timed test.

    .venv/bin/python benchmarks/suite_drift.py [--eps 1e-4] [--parts vision,attention,head] [--variants base]
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.inputs.models import DEFAULT_MODEL, resolve_model  # noqa: E402
from harness.publish.gate import decide, gate_policy, load_gate_config  # noqa: E402
from harness.run.options import RunConfig  # noqa: E402
from harness.runner import execute  # noqa: E402

# Which tensors each part moves (a substring of the weight's name).
PARTS = {"vision": "visual.", "attention": "self_attn.o_proj", "head": "lm_head"}


def drifted_copy(model: Path, dest: Path, part: str, eps: float, seed: int = 0) -> Path:
    """A copy of `model` whose `part` tensors carry relative noise of `eps`."""
    import torch
    from safetensors.torch import load_file, save_file

    shutil.copytree(model, dest)
    weights = dest / "model.safetensors"
    tensors = load_file(weights)
    gen = torch.Generator().manual_seed(seed)
    moved = [k for k in tensors if PARTS[part] in k and tensors[k].is_floating_point()]
    assert moved, f"no tensor of {part} ({PARTS[part]})"
    for key in moved:
        t = tensors[key]
        tensors[key] = t + eps * t.abs().mean() * torch.randn(t.shape, generator=gen, dtype=t.dtype)
    save_file(tensors, weights, metadata={"format": "pt"})
    return dest


def report(label: str, out: Path, model: str, variants: list[str]) -> None:
    run = execute(RunConfig(cases=[Path("cases")], out=out, model=model, reference_model=DEFAULT_MODEL,
                            variants=variants, localize="off"), progress=lambda _: None)
    cells = [v for c in run.cases for v in c.variants.values()]
    failing = sum(v.verdict == "fail" for v in cells)
    drifting = sum(bool(v.drifting) for v in cells)
    gate = decide(run, "release", gate_policy(load_gate_config(), "release")["policies"]["release"])
    print(f"\n{label}: {failing} failing cells, {drifting} drifting cells of {len(cells)}; release gate {gate.label}")
    for s in run.suite:
        print(f"  {s.metric:14} median {s.median:8.3g}x  clean {s.clean_median:6.3g}x  shift {s.shift:6.3g}x  "
              f"p {s.p_value:8.2g}  {'DRIFTS' if s.drifts else 'holds'}")
    if not run.suite:
        print("  no suite test (no clean sample recorded: vlm-parity calibrate --record)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--eps", type=float, nargs="+", default=[1e-4])
    parser.add_argument("--parts", default=",".join(PARTS))
    parser.add_argument("--variants", default="default", help="comma-separated variants, or a profile (default)")
    parser.add_argument("--clean", action="store_true", help="also run the clean model first")
    args = parser.parse_args()
    variants = args.variants.split(",")
    model = Path(resolve_model(DEFAULT_MODEL))
    with tempfile.TemporaryDirectory() as tmp:
        if args.clean:
            report("clean", Path(tmp) / "clean", DEFAULT_MODEL, variants)
        for part in args.parts.split(","):
            for eps in args.eps:
                copy = drifted_copy(model, Path(tmp) / f"{part}-{eps:g}" / model.name, part, eps)
                report(f"{part} eps {eps:g}", Path(tmp) / f"out-{part}-{eps:g}", str(copy), variants)


if __name__ == "__main__":
    main()
