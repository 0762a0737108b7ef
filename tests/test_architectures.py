"""Every built-in architecture on the real engine (vLLM CPU vs HF, float32): one engine start each.

The default model runs the whole matrix in tests/test_parity.py; here every other built-in model runs a few
cases chosen for their image paths (a wide and a tall image: tiles, crops and unpadding differ; two images in
one prompt; images across turns; text only; a video where the model takes one) on the base variant. Each cell
must pass, or be a failure on record in known_failures.yaml with a reproduction. LFM2-VL with two query heads
hits a real vLLM CPU bug on every case, while the same recipe with one head passes: the harness, not the
recipe, is right.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from harness.core.schema import RunResult
from harness.inputs.models import DEFAULT_MODEL, MODELS, model_dir, video_token_id
from harness.judging.explain import case_lines, variant_lines
from harness.runner import RunConfig, execute
from tests.conftest import CASES, VIDEO_CASES

pytestmark = pytest.mark.parity

CASES_BY_PATH = {"rocket-420-wide", "tall-stripes-420", "two-images", "chat-interleaved", "text-only",
                 "video-moving-circle"}
OTHERS = [name for name, recipe in MODELS.items() if name != DEFAULT_MODEL]


def run_model(name: str, out: Path) -> RunResult:
    """The chosen cases on the base path; a model that takes no video skips the video case, with the reason."""
    run = execute(RunConfig(cases=[CASES], out=out, model=name, variants=["base"], only=CASES_BY_PATH),
                  progress=lambda _: None)
    skipped = {c.case_id: c.reasons for c in run.cases if c.verdict == "skipped"}
    takes_video = video_token_id(model_dir(name)) is not None
    assert set(skipped) == (set() if takes_video else CASES_BY_PATH & VIDEO_CASES), skipped
    assert all("takes no video" in r[0] for r in skipped.values()), skipped
    run.cases = [c for c in run.cases if c.verdict != "skipped"]
    return run


# The bugs on record each model must show (every case it names fails as known, with that reproduction).
KNOWN = {"tiny-lfm2-vl": ("repro/vllm_cpu_rotary_3d.py", CASES_BY_PATH),
         "tiny-gemma3": ("repro/vllm_cpu_gemma3_mm_prefix.py", CASES_BY_PATH - {"text-only"} - VIDEO_CASES),
         "tiny-qwen2.5-vl": (".venv/bin/python repro/transformers_qwen2_5_vl_video_rope.py", {"video-moving-circle"})}


@pytest.mark.parametrize("name", OTHERS)
def test_architecture_passes_or_its_bug_is_on_record(name: str, tmp_path: Path) -> None:
    run = run_model(name, tmp_path)
    assert run.status == "complete" and run.verdict == "pass", [case_lines(c) for c in run.cases]
    reproduction, expected = KNOWN.get(name, ("", set()))
    known = set()
    for case in run.cases:
        for cell in case.variants.values():
            if cell.verdict == "known":
                record = next(n for n in cell.notes if n.kind == "known_failure")
                assert record.data["reproduction"], (case.case_id, variant_lines(cell))
                if record.data["reproduction"] == reproduction:
                    known.add(case.case_id)
                assert cell.comparison.prompt_ids_match, case.case_id  # a numerical bug, not a prompt mismatch
            else:
                assert cell.verdict == "pass", (case.case_id, variant_lines(cell))
    assert known == expected & {c.case_id for c in run.cases}, known
    # A clean run pays nothing for localization: no probe started, no ladder.
    if not known:
        assert not any(c.ladder for c in run.cases) and not list(tmp_path.rglob("probe-*.log"))
