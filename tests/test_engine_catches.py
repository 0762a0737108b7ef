"""The harness catches real differences in a real engine (vLLM on CPU).

The engine serves an altered copy of the tiny model while the reference loads
the original (`--reference-model`), the way a converted or quantized
checkpoint is checked against its source.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from harness.runner import RunConfig, execute
from tests.conftest import CASES

pytestmark = pytest.mark.engine

SUBSET = {"astronaut-420", "two-images", "text-only", "chelsea-png"}


def altered_copy(model: Path, dest: Path) -> Path:
    shutil.copytree(model, dest)
    return dest


def run(engine_model: Path, reference_model: Path, out: Path):
    return execute(RunConfig(cases=[CASES], out=out, model=str(engine_model), reference_model=str(reference_model),
                             only=SUBSET), progress=lambda _: None)


def test_altered_vision_weights_fail_image_cases_by_metric(tmp_path: Path, tiny_model: Path) -> None:
    model = altered_copy(tiny_model, tmp_path / "model")
    weights = model / "model.safetensors"
    tensors = load_file(weights)
    gen = torch.Generator().manual_seed(0)
    vision = [k for k in tensors if "visual" in k and tensors[k].is_floating_point()]
    assert vision, "no vision weights found to alter"
    for key in vision:  # +-1e-3 relative noise: small enough to look like a conversion error
        t = tensors[key]
        tensors[key] = t + 1e-3 * t.abs().mean() * torch.randn(t.shape, generator=gen)
    save_file(tensors, weights, metadata={"format": "pt"})

    result = run(model, tiny_model, tmp_path / "out")
    by_id = {c.case_id: c for c in result.cases}
    assert set(by_id) == SUBSET
    for case_id in SUBSET - {"text-only"}:
        case = by_id[case_id]
        assert case.verdict == "fail", (case_id, case.reasons)
        assert case.comparison.prompt_ids_match
        assert any(r.startswith("batched: prefill_max = ") for r in case.reasons), case.reasons
        assert case.comparison.prefill_max_image > 1e-4
    # A text-only prompt never touches the vision tower: the same run passes it.
    assert by_id["text-only"].verdict == "pass", by_id["text-only"].reasons


def test_tokenizer_mismatch_is_reported_as_prompt_ids(tmp_path: Path, tiny_model: Path) -> None:
    model = altered_copy(tiny_model, tmp_path / "model")
    tokenizer = json.loads((model / "tokenizer.json").read_text())
    tokenizer["model"]["merges"] = []  # same vocab, but every word now splits into bytes
    (model / "tokenizer.json").write_text(json.dumps(tokenizer))

    result = run(model, tiny_model, tmp_path / "out")
    assert {c.case_id for c in result.cases} == SUBSET
    for case in result.cases:
        assert case.verdict == "fail", (case.case_id, case.reasons)
        assert case.comparison.prompt_ids_match is False
        assert case.reasons[0].startswith("batched: prompt_ids_match = false")
        assert case.comparison.prefill_max is None


def test_fast_upsample_pixels_move_parity_while_pil_pixels_pass(tmp_path: Path, tiny_model: Path) -> None:
    """The nvJPEG stand-in on CPU: same engine start, PIL pixels vs fast-upsampled 4:2:0 pixels."""
    result = execute(RunConfig(cases=[CASES], out=tmp_path / "out", model=str(tiny_model),
                               only={"astronaut-420", "coffee-444", "chelsea-png"},
                               decode_effect="simplejpeg-fastupsample"), progress=lambda _: None)
    by_id = {c.case_id: c for c in result.cases}
    assert all(c.variants["batched"].verdict == "pass" for c in result.cases), [c.reasons for c in result.cases]
    noise_floor = max(c.comparison.prefill_max for c in result.cases)
    name = "decoder-simplejpeg-fastupsample"
    astronaut = by_id["astronaut-420"].variants[name]
    assert astronaut.details["pixel_deltas"][0]["stats"]["px_max"] > 0
    assert astronaut.comparison.prefill_max > 100 * noise_floor
    assert astronaut.verdict == "fail" and any(r.startswith("prefill_max = ") for r in astronaut.reasons)
    # 4:4:4 has no chroma to upsample, and a PNG never reaches a JPEG decoder: unaffected.
    for case_id in ("coffee-444", "chelsea-png"):
        effect = by_id[case_id].variants[name]
        assert effect.verdict == "pass" and effect.comparison.prefill_max <= 1e-4


def test_engine_template_differing_by_one_space_fails_native_only(tmp_path: Path, tiny_model: Path) -> None:
    """The engine serves a copy whose chat template adds one space after the role: the rendered form
    (the reference's template) passes, the native form (the engine's own template) fails every case
    on prompt ids, and says that the template is where it starts."""
    model = altered_copy(tiny_model, tmp_path / "model")
    template = model / "chat_template.jinja"
    text = template.read_text()
    assert "message['role'] + '\\n'" in text
    template.write_text(text.replace("message['role'] + '\\n'", "message['role'] + ' \\n'", 1))
    result = execute(RunConfig(cases=[CASES], out=tmp_path / "out", model=str(model), reference_model=str(tiny_model),
                               only=SUBSET, variants=["base", "native"]), progress=lambda _: None)
    assert {c.case_id for c in result.cases} == SUBSET
    for case in result.cases:
        assert case.variants["batched"].verdict == "pass", (case.case_id, case.variants["batched"].reasons)
        native = case.variants["native"]
        assert native.verdict == "fail" and native.comparison.prompt_ids_match is False, native.reasons
        assert native.reasons[0].startswith("vs reference: prompt_ids_match = false")
        assert native.details["stage"].startswith("prompt token ids differ: the engine's own chat template")
