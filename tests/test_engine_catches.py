"""The harness catches real differences in an engine's model.

The engine serves an altered copy of the tiny model while the reference loads
the original (`--reference-model`), the way a converted or quantized
checkpoint is checked against its source. These tests prove the judging (the
metrics, the verdicts, the stage ladder), which vLLM would not change: the
engine is the HF engine in this process (tests/inline.py) against the built-in
model's stored references, with the ladder's probes in this process too, so
they take seconds and start no process. On vLLM itself: a checkpoint whose
chat template differs (only vLLM renders it; tests/test_fault_injection.py's
shared run), and the stage ladder on vLLM's own captures, from probe processes
(a chunked-prefill bug inside vLLM, same file). A run is localized only where
a test reads its ladder.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from harness.judging.explain import case_lines, ladder_text
from harness.localize import run as localize_run
from harness.runner import RunConfig, execute
from tests.conftest import CASES
from tests.inline import inline, inline_probe

SUBSET = {"astronaut-420", "two-images", "text-only", "chelsea-png"}


def altered_copy(model: Path, dest: Path) -> Path:
    shutil.copytree(model, dest)
    return dest


def run_hf(engine_model: Path | str, reference_model: str, out: Path, only: set[str] = SUBSET, **options):
    """The HF engine in this process serves `engine_model` on the base path, and the ladder's probes (the
    engine's and the reference's) run in this process too: no process start. The reference is the built-in
    model by name (its stored references)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(localize_run, "run_probe", inline_probe)
        return execute(RunConfig(cases=[CASES], out=out, model=str(engine_model), reference_model=reference_model,
                                 engine="hf", only=only, variants=["base"], **options),
                       progress=lambda _: None, launcher=inline)


def test_altered_vision_weights_fail_image_cases_by_metric(tmp_path: Path, tiny_model: str,
                                                           tiny_model_dir: Path) -> None:
    model = altered_copy(tiny_model_dir, tmp_path / "model")
    weights = model / "model.safetensors"
    tensors = load_file(weights)
    gen = torch.Generator().manual_seed(0)
    vision = [k for k in tensors if "visual" in k and tensors[k].is_floating_point()]
    assert vision, "no vision weights found to alter"
    for key in vision:  # +-1e-3 relative noise: small enough to look like a conversion error
        t = tensors[key]
        tensors[key] = t + 1e-3 * t.abs().mean() * torch.randn(t.shape, generator=gen)
    save_file(tensors, weights, metadata={"format": "pt"})

    result = run_hf(model, tiny_model, tmp_path / "out")
    by_id = {c.case_id: c for c in result.cases}
    assert set(by_id) == SUBSET
    for case_id in SUBSET - {"text-only"}:
        case = by_id[case_id]
        assert case.verdict == "fail", (case_id, case_lines(case))
        assert case.comparison.prompt_ids_match
        assert any(r.startswith("batched: vs reference: prefill_max = ") for r in case_lines(case)), case_lines(case)
        assert case.comparison.prefill_max_image > 1e-4
        # The default run localizes it: every stage before the vision encoder agrees, the encoder does not.
        assert case.ladder is not None and case.ladder.first == "encoder", ladder_text(case.ladder)
        statuses = {r.stage: r.status for r in case.ladder.rungs}
        assert statuses["processor"] == statuses["prompt"] == "pass" and statuses["features"] == "not-compared"
        assert "image 1 of" in next(r for r in case.ladder.rungs if r.stage == "encoder").where
    # A text-only prompt never touches the vision tower: the same run passes it, and is not probed.
    assert by_id["text-only"].verdict == "pass", case_lines(by_id["text-only"])
    assert by_id["text-only"].ladder is None


def test_lm_head_and_rope_faults_are_localized_to_their_stage(tmp_path: Path, tiny_model: str,
                                                               tiny_model_dir: Path) -> None:
    """lm_head scaled by 1.01: every stage agrees up to the logits. rope_theta doubled in the engine's config:
    the prompt ids and position ids agree (positions are indexes), the first decoder layer does not."""
    lm_head = altered_copy(tiny_model_dir, tmp_path / "lm_head")
    tensors = load_file(lm_head / "model.safetensors")
    tensors["lm_head.weight"] = tensors["lm_head.weight"] * 1.01
    save_file(tensors, lm_head / "model.safetensors", metadata={"format": "pt"})
    rope = altered_copy(tiny_model_dir, tmp_path / "rope")
    config = json.loads((rope / "config.json").read_text())
    config["text_config"]["rope_parameters"]["rope_theta"] *= 2
    (rope / "config.json").write_text(json.dumps(config))
    for model, stage, detail in ((lm_head, "logits", "vocabulary entries"), (rope, "layers", "layers.0 (of")):
        result = run_hf(model, tiny_model, tmp_path / f"out-{model.name}")
        for case in result.cases:
            assert case.verdict == "fail" and case.ladder is not None, case.case_id
            assert case.ladder.first == stage, (model.name, case.case_id, ladder_text(case.ladder))
            assert detail in next(r for r in case.ladder.rungs if r.stage == stage).where
            stages = [r.stage for r in case.ladder.rungs]
            if case.case_id != "text-only":  # every stage before it captured on both sides, and equal
                before = case.ladder.rungs[:stages.index(stage)]
                assert {r.status for r in before} == {"pass"}, (model.name, case.case_id, ladder_text(case.ladder))


def test_tokenizer_mismatch_is_reported_as_prompt_ids(tmp_path: Path, tiny_model: str, tiny_model_dir: Path) -> None:
    model = altered_copy(tiny_model_dir, tmp_path / "model")
    tokenizer = json.loads((model / "tokenizer.json").read_text())
    tokenizer["model"]["merges"] = []  # same vocab, but every word now splits into bytes
    (model / "tokenizer.json").write_text(json.dumps(tokenizer))

    result = run_hf(model, tiny_model, tmp_path / "out", localize="off")
    assert {c.case_id for c in result.cases} == SUBSET
    for case in result.cases:
        assert case.verdict == "fail", (case.case_id, case_lines(case))
        assert case.comparison.prompt_ids_match is False
        assert case_lines(case)[0].startswith("batched: vs reference: prompt_ids_match = false")
        assert case.comparison.prefill_max is None


def test_fast_upsample_pixels_move_parity_while_pil_pixels_pass(tmp_path: Path, tiny_model: str) -> None:
    """The nvJPEG stand-in on CPU: same engine, PIL pixels vs fast-upsampled 4:2:0 pixels."""
    result = run_hf(tiny_model, tiny_model, tmp_path / "out", only={"astronaut-420", "coffee-444", "chelsea-png"},
                    decode_effect="simplejpeg-fastupsample", localize="off")
    by_id = {c.case_id: c for c in result.cases}
    assert all(c.variants["batched"].verdict == "pass" for c in result.cases), [case_lines(c) for c in result.cases]
    noise_floor = max(c.comparison.prefill_max for c in result.cases)
    name = "decoder-simplejpeg-fastupsample"
    astronaut = by_id["astronaut-420"].variants[name]
    assert astronaut.details["pixel_deltas"][0]["stats"]["px_max"] > 0
    assert astronaut.comparison.prefill_max > 100 * noise_floor
    assert astronaut.verdict == "fail" and any(f.metric == "prefill_max" for f in astronaut.failing)
    # 4:4:4 has no chroma to upsample, and a PNG never reaches a JPEG decoder: unaffected.
    for case_id in ("coffee-444", "chelsea-png"):
        effect = by_id[case_id].variants[name]
        assert effect.verdict == "pass" and effect.comparison.prefill_max <= 1e-4


def test_a_small_weight_drift_under_the_old_fixed_bound_is_drift_or_failure(tmp_path: Path, tiny_model: str,
                                                                              tiny_model_dir: Path) -> None:
    """lm_head scaled by 1 + 2e-6 (a conversion that rounds a little differently): every prompt logprob moves
    by ~1e-5, under the float32 ceiling of 1e-4 that was the only bound before floors, yet several times each
    case's own floor: reported, never silent."""
    model = altered_copy(tiny_model_dir, tmp_path / "model")
    weights = model / "model.safetensors"
    tensors = load_file(weights)
    tensors["lm_head.weight"] = (tensors["lm_head.weight"].double() * (1 + 2e-6)).float()
    save_file(tensors, weights, metadata={"format": "pt"})
    result = run_hf(model, tiny_model, tmp_path / "out", localize="off")
    cells = [c.variants["batched"] for c in result.cases]
    assert all(cell.comparison.prefill_max < 1e-4 for cell in cells)  # the old fixed bound passed them all
    flagged = [cell for cell in cells if cell.drifting or cell.failing]
    assert len(flagged) == len(cells), [(c.comparison.checks["prefill_max"].ratio, c.verdict) for c in cells]
    assert all(f.ratio > 4 for cell in flagged for f in cell.findings if f.metric == "prefill_mean")
