"""Filling the ladders: after a run, each failing case is re-run once in a probe engine and in the reference
(`harness.localize.probe`, one process per engine setting, every case of it in one start), and their
captures compared stage by stage (`harness.judging.ladder`). A clean run starts nothing.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from harness.core.schema import CaseResult, Ladder, Rung
from harness.engines import lifetime
from harness.engines.base import Capabilities, EngineSettings, Request, resolve_engine
from harness.engines.capture import CAPTURED
from harness.inputs.decode.deltas import pixel_deltas
from harness.inputs.decode.registry import decode_array
from harness.judging.compare.returned import after_logits
from harness.judging.ladder import EPS, Tolerance, ladder
from harness.run.plan import Probe, settings_key

Arrays = dict[str, np.ndarray]
PROBE_TIMEOUT_S = 900.0
# Failing cases probed by default: where one bug fails a thousand cases, the first ones say where it is, and
# the run does not pay a reference forward and its floor runs for each of the others.
MAX_PROBED = 16


def which_to_localize(results: Sequence[CaseResult], asked: Sequence[str], order: Sequence[str],
                      limit: int = MAX_PROBED) -> dict[str, str]:
    """Case id -> the variant its ladder is for: the first `limit` failing cases and each case `asked` for by
    id, on its headline variant when that fails, else on its first failing variant in the plan's order. A case
    whose cells fail only after the logits (`harness.judging.compare.returned`) is not probed unless asked."""
    chosen: dict[str, str] = {}
    failing_chosen = 0
    for result in results:
        if result.case_id not in asked and (result.verdict != "fail" or failing_chosen >= limit):
            continue
        failing_chosen += result.case_id not in asked
        # a cell that fails only after the logits is named so without a probe: nothing inside the model differs
        failing = [n for n in order if (c := result.variants.get(n)) is not None and c.verdict == "fail"
                   and not after_logits(c.failing)]
        if not failing and result.case_id not in asked:
            failing_chosen -= 1
            continue
        ran = [n for n in order if (c := result.variants.get(n)) is not None and c.engine is not None]
        pick = (result.headline if result.headline in failing else failing[0] if failing else
                result.headline if result.headline in ran else ran[0] if ran else None)
        if pick:
            chosen[result.case_id] = pick
    return chosen


def run_probe(engine: str, settings: EngineSettings, requests: Sequence[Request], log: Path,
              timeout_s: float = PROBE_TIMEOUT_S) -> tuple[list[Arrays | None], list[str | None]]:
    """One probe process: each request's arrays (None where it failed) and errors."""
    with tempfile.TemporaryDirectory(prefix="vlm-parity-probe-") as tmp:
        spec = Path(tmp) / "spec.json"
        spec.write_text(json.dumps({"engine": engine, "settings": asdict(settings), "out": tmp, "parent": os.getpid(),
                                    "requests": [asdict(r) for r in requests]}, default=list))
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as out:
            proc = lifetime.start([sys.executable, "-m", "harness.localize.probe", str(spec)], stdout=out,
                                  stderr=subprocess.STDOUT)
            try:
                exited = lifetime.wait(proc, timeout_s)
            finally:
                lifetime.end(proc)
        if not exited:
            return [None] * len(requests), [f"the probe ran past {timeout_s:.0f} s (log: {log})"] * len(requests)
        status_file = Path(tmp) / "status.json"
        status = (json.loads(status_file.read_text()) if status_file.exists() else
                  {"fatal": f"the probe died (log: {log})"})
        arrays: list[Arrays | None] = []
        errors: list[str | None] = []
        for index in range(len(requests)):
            state = status.get("fatal") or status.get(str(index), "no result")
            if state == "ok":
                with np.load(Path(tmp) / f"{index}.npz", allow_pickle=False) as data:
                    arrays.append({k: data[k] for k in data.files})
                errors.append(None)
            else:
                arrays.append(None)
                errors.append(state)
        return arrays, errors


def pixels_rung(reference: Request, engine: Request, engine_loader: Callable[[Path], Any] | None) -> Rung:
    """Whether both sides were given the same pixels: the harness decodes for both unless the engine decodes
    the file itself (its own loader) or is given embeddings."""
    if not reference.images:
        return Rung("pixels", "unavailable", reason="the case has no image")
    if engine.image_input == "embeddings":
        return Rung("pixels", "unavailable", reason="the engine is given image embeddings, not pixels")
    own = engine.prompt_form == "native" or engine.image_input == "bytes"
    if not own and engine.decoder == reference.decoder:
        return Rung("pixels", "pass", where=f"both sides decoded by the harness with {engine.decoder}")
    if own and engine_loader is None:
        return Rung("pixels", "unavailable", reason="the engine decodes the files itself and exposes no loader")
    worst, where, shapes = 0, "", []
    for i, path in enumerate(reference.images):
        ref = decode_array(Path(path), reference.decoder)
        got = np.asarray(engine_loader(Path(path)).convert("RGB")) if own else decode_array(Path(path), engine.decoder)
        shapes = [list(ref.shape), list(got.shape)]
        found = pixel_deltas(ref, got)
        if isinstance(found, str):  # another size: not comparable pixel by pixel
            return Rung("pixels", "differs", shapes, where=f"image {i + 1}: {found}")
        if found.px_max > worst:
            worst = found.px_max
            where = f"image {i + 1}: {found.px_frac_differ:.1%} of pixels differ, by up to {worst}"
    return Rung("pixels", "differs" if worst else "pass", shapes, float(worst), 255.0, 0.0, 0.0,
                where=where or f"identical ({'the engine' if own else engine.decoder} vs {reference.decoder})")


def localize(probes: Sequence[Probe], results: dict[str, CaseResult], engine: str, reference_engine: str,
             reference_settings: EngineSettings, logs: Path, k: float, engine_dtypes: dict[str, str],
             media_tokens: Mapping[int, str], capabilities: Capabilities) -> dict[str, Ladder]:
    """Each probe's ladder, by case id. One engine process per engine setting, one reference process."""
    engine_arrays: dict[str, Arrays | None] = {}
    engine_errors: dict[str, str | None] = {}
    unavailable = {s: f"the {engine} adapter cannot reach its model's internals (servers return ids and logprobs "
                      "only)" for s in CAPTURED - capabilities.stages}
    by_settings: dict[str, list[Probe]] = {}
    for probe in probes:
        by_settings.setdefault(settings_key(probe.settings), []).append(probe)
    captured: dict[tuple[str, str], tuple[Arrays | None, str | None]] = {}
    if capabilities.stages:  # an engine that exposes nothing inside gets the stages the run itself shows
        for index, group in enumerate(by_settings.values()):
            arrays, errors = run_probe(engine, group[0].settings, [p.engine for p in group],
                                       logs / f"probe-engine-{index}.log")
            for probe, a, e in zip(group, arrays, errors):
                engine_arrays[probe.case_id], engine_errors[probe.case_id] = a, e
        requests = [r for p in probes for r in p.reference]
        requests.sort(key=lambda r: sorted(r.overrides.items()))  # the reference loads each recomputed model once
        ref_arrays, ref_errors = run_probe(reference_engine, reference_settings, requests,
                                           logs / "probe-reference.log")
        captured = {(r.case_id, r.variant): (a, e) for r, a, e in zip(requests, ref_arrays, ref_errors)}
    loader = resolve_engine(engine).image_loader()
    ladders = {}
    for probe in probes:
        main, result = probe.reference[0], results[probe.case_id]
        reference, error = captured.get((probe.case_id, main.variant), ({}, None))
        missing = dict(unavailable)
        if reference is None:  # nothing inside can be compared without the reference's side
            reference = {}
            missing.update({s: f"the reference probe failed: {error}" for s in CAPTURED})
        floors = [a for r in probe.reference[1:] if (a := captured.get((probe.case_id, r.variant), (None,))[0])]
        ref_ids = [int(t) for t in reference.get("prompt_ids", [])] or (
            result.reference.prompt_ids if result.reference else [])
        ladders[probe.case_id] = ladder(
            probe.variant, reference, engine_arrays.get(probe.case_id), floors,
            Tolerance(k, EPS.get(engine_dtypes.get(probe.variant, "float32"), EPS["float32"])), ref_ids=ref_ids,
            engine_ids=_engine_ids(engine_arrays.get(probe.case_id), result.variants.get(probe.variant)),
            media_tokens=media_tokens, pixels=pixels_rung(main, probe.engine, loader), unavailable=missing,
            probe_error=engine_errors.get(probe.case_id))
    return ladders


def _engine_ids(arrays: Arrays | None, cell: Any) -> list[int] | None:
    if arrays is not None and "prompt_ids" in arrays:
        return [int(t) for t in arrays["prompt_ids"]]
    return list(cell.engine.prompt_ids) if cell is not None and cell.engine and cell.engine.prompt_ids else None
