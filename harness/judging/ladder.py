"""The stage ladder: what the engine and the reference computed on the way to the logits, compared in the
order the model computes it, stopping at the first stage that differs beyond its tolerance.

Pure functions over captured arrays (`harness.engines.capture`) and the run's outputs. A stage's tolerance
is the verdicts' floor rule: `k x floor + atol`, the floor being how far the reference moves there when it
is recomputed by its own floor runs (float64, another attention kernel, the engine's dtype), `atol` a few
rounding steps of the engine's dtype at the reference's scale. Integer stages (token ids, grids, positions)
are exact.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from harness.core.schema import Ladder, Rung

# The stages in the order the model computes them: (key, what it is). The `CAPTURED` ones come from the probe's
# hooks; the others from the run itself (the pixels each side was given, its prompt ids).
STAGES: tuple[tuple[str, str], ...] = (
    ("pixels", "decoded pixels"),
    ("processor", "processor output"),
    ("prompt", "placeholders and prompt ids"),
    ("encoder", "vision encoder output"),
    ("features", "image features after the projector"),
    ("embeds", "input embeddings after merging"),
    ("positions", "position ids"),
    ("layers", "decoder hidden states"),
    ("logits", "logits at the last prompt position"),
)
# "returned": a cell whose logits agree and whose returned data does not (`harness.judging.compare.returned`): named
# without a probe, as the rung after the logits.
LABELS = {**dict(STAGES), "returned": "after the logits (the choice of token under bias, penalties or a constraint, "
                                       "the sampler, returned logprobs and ranks, text, finish reason)"}
# A stage's atol, not the thresholds' `<metric>_atol`: those bound a metric of the output logprobs in its own
# units, calibrated on the default model; a stage is a raw tensor of any scale (pixels, hidden states), so its
# atol is relative: ROUNDINGS roundings of its dtype's machine epsilon (EPS) at the reference's scale. Its `k`
# is the thresholds' (`harness.localize.run.localize` is given it), so only the rounding is named here.
ROUNDINGS = 4  # how many roundings of one value an implementation may legitimately differ by (atol)
EPS = {"float64": 2.2e-16, "float32": 1.19e-7, "bfloat16": 7.8e-3, "float16": 9.8e-4}


@dataclass(frozen=True)
class Tolerance:
    k: float
    eps: float


def _floor(key: str, reference: np.ndarray, floors: Sequence[Mapping[str, np.ndarray]]) -> float | None:
    """The reference's own worst |difference| at `key` over its floor runs (None: no run captured it)."""
    found = [float(np.abs(f[key] - reference).max(initial=0.0)) for f in floors
             if key in f and f[key].shape == reference.shape]
    return max(found) if found else None


def _runs(mask: np.ndarray) -> str:
    """Row indexes as ranges: 3-5, 9."""
    rows = np.flatnonzero(mask)
    if not len(rows):
        return ""
    parts, start, prev = [], rows[0], rows[0]
    for r in [*rows[1:], None]:
        if r is not None and r == prev + 1:
            prev = r
            continue
        parts.append(f"{start}-{prev}" if prev > start else f"{start}")
        if r is not None:
            start = prev = r
    return ", ".join(parts[:4]) + (", ..." if len(parts) > 4 else "")


def _row_owner(rows: np.ndarray, per_item: Sequence[int] | None, total: int) -> str:
    """Which image the rows over the bound belong to, and which rows of it."""
    if per_item is None or not len(per_item) or sum(per_item) == 0:
        return f"rows {_runs(rows)} of {total}"
    scale = total / sum(per_item)  # the encoder has more rows per image than the projector's output
    bounds = np.cumsum([0, *[round(n * scale) for n in per_item]])
    worst = int(np.flatnonzero(rows)[0])
    image = int(np.searchsorted(bounds, worst, side="right")) - 1
    lo, hi = bounds[image], bounds[image + 1]
    return f"image {image + 1} of {len(per_item)}, rows {_runs(rows[lo:hi])} of {hi - lo}"


def _token_kind(position: int, prompt_ids: Sequence[int], media_tokens: Mapping[int, str]) -> str:
    if position < len(prompt_ids):
        return f"{media_tokens.get(prompt_ids[position], 'text')} token"
    return "token"


def compare_tensor(key: str, reference: np.ndarray, engine: np.ndarray, floors: Sequence[Mapping[str, np.ndarray]],
                   tol: Tolerance) -> Rung:
    """One captured tensor: exact for integers, else within `k x floor + atol`. The rows over the bound are
    kept in `where` by the caller (it knows what a row is)."""
    shapes = [list(reference.shape), list(engine.shape)]
    integer = not np.issubdtype(reference.dtype, np.floating)
    if integer != (not np.issubdtype(engine.dtype, np.floating)):
        kinds = ["integers" if integer else "floats", "floats" if integer else "integers"]
        return Rung(key, "unavailable", shapes, reason=f"not comparable: the reference has {kinds[0]} here, the "
                    f"engine {kinds[1]} (raw pixels normalized inside the model, or another layout)")
    if reference.shape != engine.shape:
        if reference.size == engine.size:
            engine = engine.reshape(reference.shape)
        elif reference.ndim == engine.ndim == 2 and reference.shape[1] == engine.shape[1]:
            return Rung(key, "differs", shapes, where=f"{engine.shape[0]} rows in the engine, {reference.shape[0]} "
                        "in the reference")
        else:
            return Rung(key, "unavailable", shapes, reason="not comparable: the two sides lay it out differently")
    diff = np.abs(engine.astype(np.float64) - reference.astype(np.float64))
    error = float(diff.max(initial=0.0))
    scale = float(np.abs(reference).max(initial=0.0))
    if integer:
        return Rung(key, "pass" if error == 0 else "differs", shapes, error, scale, 0.0, 0.0)
    floor = _floor(key, reference, floors)
    # atol: a few roundings at the reference's scale, in the engine's dtype or, for the processor's output
    # (computed in float32 whatever the model's dtype, and the same in every floor run), in float32.
    eps = max(tol.eps, EPS["float32"]) if key.startswith("processor.") else tol.eps
    bound = tol.k * (floor or 0.0) + ROUNDINGS * eps * max(scale, 1.0)
    return Rung(key, "pass" if error <= bound else "differs", shapes, error, scale, floor, bound,
                reason="" if floor is not None else "no floor run captured this stage: rounding only")


def _over(reference: np.ndarray, engine: np.ndarray, bound: float) -> np.ndarray:
    """Per row (first axis), whether any element is beyond the bound."""
    diff = np.abs(engine.reshape(reference.shape) - reference)
    return (diff.reshape(diff.shape[0], -1) > bound).any(axis=1)


def ladder(variant: str, reference: Mapping[str, np.ndarray], engine: Mapping[str, np.ndarray] | None,
           floors: Sequence[Mapping[str, np.ndarray]], tol: Tolerance, *, ref_ids: Sequence[int],
           engine_ids: Sequence[int] | None, media_tokens: Mapping[int, str], pixels: Rung,
           unavailable: Mapping[str, str], probe_error: str | None = None) -> Ladder:
    """The case's ladder on `variant`: each stage compared until the first that differs; the later ones are
    `not-compared`. `unavailable` gives, per captured stage the engine's adapter does not expose, why."""
    rungs = [pixels, _processor_rung(reference, engine, floors, tol, unavailable, probe_error),
             _prompt_rung(ref_ids, engine_ids, media_tokens)]
    per_image = [int(n) for n in reference["features.rows"]] if "features.rows" in reference else None
    for key in ("encoder", "features", "embeds", "positions"):
        rungs.append(_captured(key, reference, engine, floors, tol, unavailable, probe_error, per_image,
                               ref_ids, media_tokens))
    rungs.append(_layers_rung(reference, engine, floors, tol, unavailable, probe_error, ref_ids,
                              media_tokens))
    rungs.append(_captured("logits", reference, engine, floors, tol, unavailable, probe_error, per_image,
                           ref_ids, media_tokens))
    first = None
    for rung in rungs:
        if first is not None and rung.status in ("pass", "differs"):
            rung.status, rung.reason = "not-compared", f"after the first difference ({LABELS[first]})"
        elif first is None and rung.status == "differs":
            first = rung.stage
    return Ladder(variant, rungs, first, probe_error)


def _align(key: str, ref: np.ndarray, eng: np.ndarray) -> tuple[np.ndarray, np.ndarray, str]:
    """The parts both sides computed: an engine's vocabulary may be padded for its kernels; a prompt whose
    start came from the engine's prefix cache was computed from there on (its last positions)."""
    if key == "logits":
        return ref, eng[..., :ref.shape[-1]], ""
    if key not in ("embeds", "positions") and not key.startswith("layer."):
        return ref, eng, ""
    axis = ref.ndim - 1 if key == "positions" else 0
    rest = [n for i, n in enumerate(ref.shape) if i != axis], [n for i, n in enumerate(eng.shape) if i != axis]
    if ref.ndim != eng.ndim or rest[0] != rest[1] or eng.shape[axis] >= ref.shape[axis]:
        return ref, eng, ""
    start = ref.shape[axis] - eng.shape[axis]
    return (np.take(ref, np.arange(start, ref.shape[axis]), axis=axis), eng,
            f"the engine computed positions {start}-{ref.shape[axis] - 1} (the rest came from its prefix cache)")


def _aligned(key: str, ref: np.ndarray, eng: np.ndarray, floors: Sequence[Mapping[str, np.ndarray]]
             ) -> tuple[np.ndarray, np.ndarray, list[Mapping[str, np.ndarray]], str]:
    """`_align` applied to the reference, and the same cut to each floor run's capture."""
    cut, eng, note = _align(key, ref, eng)
    return cut, eng, [{**f, key: _align(key, f[key], eng)[0]} if key in f else f for f in floors], note


def _missing(key: str, engine: Mapping[str, np.ndarray] | None, unavailable: Mapping[str, str],
             probe_error: str | None) -> Rung | None:
    if key in unavailable:
        return Rung(key, "unavailable", reason=unavailable[key])
    if engine is None:
        return Rung(key, "unavailable", reason=f"the probe failed: {probe_error}" if probe_error else "no probe ran")
    return None


def _processor_rung(reference: Mapping[str, np.ndarray], engine: Mapping[str, np.ndarray] | None,
                    floors: Sequence[Mapping[str, np.ndarray]], tol: Tolerance, unavailable: Mapping[str, str],
                    probe_error: str | None) -> Rung:
    """Every processor output both sides name (pixel values, the image grid): the worst of them."""
    if (missing := _missing("processor", engine, unavailable, probe_error)) is not None:
        return missing
    assert engine is not None
    keys = sorted(k for k in reference if k.startswith("processor.") and k in engine)
    if not keys:
        return Rung("processor", "unavailable", reason="no image input on this case (or neither side names it)")
    parts = [(k.removeprefix("processor."), compare_tensor(k, reference[k], engine[k], floors, tol)) for k in keys]
    for name, rung in parts:
        if rung.status == "differs":
            return Rung("processor", "differs", rung.shapes, rung.error, rung.scale, rung.floor, rung.bound,
                        where=f"{name}" + (f": {rung.where}" if rung.where else ""))
    compared = [(n, r) for n, r in parts if r.status == "pass"]
    skipped = "; ".join(f"{n}: {r.reason}" for n, r in parts if r.status == "unavailable")
    if not compared:
        return Rung("processor", "unavailable", reason=skipped)
    return Rung("processor", "pass", where="compared: " + ", ".join(n for n, _ in compared), reason=skipped)


def _captured(key: str, reference: Mapping[str, np.ndarray], engine: Mapping[str, np.ndarray] | None,
              floors: Sequence[Mapping[str, np.ndarray]], tol: Tolerance, unavailable: Mapping[str, str],
              probe_error: str | None, per_image: Sequence[int] | None, prompt_ids: Sequence[int],
              media_tokens: Mapping[int, str]) -> Rung:
    if (missing := _missing(key, engine, unavailable, probe_error)) is not None:
        return missing
    assert engine is not None
    if key not in reference and key not in engine:
        why = "the case has no image" if key in ("encoder", "features") else "neither side captured it"
        return Rung(key, "unavailable", reason=why)
    if key not in reference or key not in engine:
        side = "engine" if key in reference else "reference"
        return Rung(key, "unavailable", reason=f"the {side} has no such stage on this model")
    ref, eng, floors, note = _aligned(key, reference[key], engine[key], floors)
    rung = compare_tensor(key, ref, eng, floors, tol)
    rung.reason = "; ".join(x for x in (rung.reason, note) if x)
    if rung.status != "differs" or rung.where:
        return rung
    eng = eng.reshape(ref.shape)
    if key == "positions":
        bad = np.flatnonzero((ref != eng).any(axis=0))
        axes = np.flatnonzero((ref != eng).any(axis=1))
        names = ("temporal", "height", "width") if ref.shape[0] == 3 else tuple(str(i) for i in range(ref.shape[0]))
        rung.where = (f"axis {', '.join(names[a] for a in axes)}; from position {bad[0]} "
                      f"({_token_kind(int(bad[0]), prompt_ids, media_tokens)}), {len(bad)} positions")
        return rung
    over = _over(ref, eng, rung.bound or 0.0)
    if key == "logits":
        rung.where = f"{int(over.sum())} of {over.size} vocabulary entries beyond the bound"
    elif key in ("encoder", "features"):
        rung.where = _row_owner(over, per_image, len(ref))
    else:
        first = int(np.flatnonzero(over)[0])
        rung.where = f"positions {_runs(over)} (first: {first}, {_token_kind(first, prompt_ids, media_tokens)})"
    return rung


def _layers_rung(reference: Mapping[str, np.ndarray], engine: Mapping[str, np.ndarray] | None,
                 floors: Sequence[Mapping[str, np.ndarray]], tol: Tolerance, unavailable: Mapping[str, str],
                 probe_error: str | None, prompt_ids: Sequence[int], media_tokens: Mapping[int, str]) -> Rung:
    """Each decoder layer's output in order; the first beyond its own floor is where the stage differs."""
    if (missing := _missing("layers", engine, unavailable, probe_error)) is not None:
        return missing
    assert engine is not None
    layers = sorted((k for k in reference if k.startswith("layer.")), key=lambda k: int(k.split(".")[1]))
    if not layers or not all(k in engine for k in layers):
        return Rung("layers", "unavailable", reason="the layers' outputs were not captured on both sides")
    worst: Rung | None = None
    for key in layers:
        ref, eng, aligned, _ = _aligned(key, reference[key], engine[key], floors)
        rung = compare_tensor(key, ref, eng, aligned, tol)
        if rung.status == "unavailable":
            return Rung("layers", "unavailable", rung.shapes, reason=rung.reason)
        index = int(key.split(".")[1])
        if rung.status == "differs":
            over = _over(ref, eng, rung.bound or 0.0) if not rung.where else None
            first = int(np.flatnonzero(over)[0]) if over is not None and over.any() else None
            where = rung.where or (f"positions {_runs(over)} (first: {first}, "
                                   f"{_token_kind(first, prompt_ids, media_tokens)})")  # type: ignore[arg-type]
            return Rung("layers", "differs", rung.shapes, rung.error, rung.scale, rung.floor, rung.bound,
                        where=f"layers.{index} (of {len(layers)}): {where}")
        ratio = (rung.error or 0.0) / rung.bound if rung.bound else 0.0
        if worst is None or ratio > (worst.error or 0.0) / (worst.bound or 1.0):
            worst = Rung("layers", "pass", rung.shapes, rung.error, rung.scale, rung.floor, rung.bound,
                         where=f"closest to its bound: layers.{index} (of {len(layers)})")
    assert worst is not None
    return worst


def _prompt_rung(ref: Sequence[int], eng: Sequence[int] | None, media_tokens: Mapping[int, str]) -> Rung:
    if not eng:
        return Rung("prompt", "unavailable", reason="the engine returned no prompt ids on this variant")
    ref, eng = list(ref), list(eng)
    shapes = [[len(ref)], [len(eng)]]
    if ref == eng:
        return Rung("prompt", "pass", shapes, 0.0, where=f"{len(ref)} ids, {sum(t in media_tokens for t in ref)} "
                    "placeholders")
    first = next((i for i, (a, b) in enumerate(zip(ref, eng)) if a != b), min(len(ref), len(eng)))
    counts = sum(t in media_tokens for t in ref), sum(t in media_tokens for t in eng)
    return Rung("prompt", "differs", shapes, where=f"first different id at position {first}; placeholders: "
                f"{counts[0]} in the reference, {counts[1]} in the engine")
