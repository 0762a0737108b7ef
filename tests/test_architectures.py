"""Every built-in architecture through the parity suite on the real engine (vLLM CPU vs HF, float32).

The default model runs the whole matrix in tests/test_parity.py; here each
other architecture runs the default cases on the base variant (one engine
start each keeps CI inside its budget). LFM2-VL with two query heads hits a
real vLLM CPU bug (harness/config/known_failures.yaml): every case must be
reported `known` with its reason, while the same recipe with one head passes,
which shows the harness, not the model recipe, is right.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from harness.core.schema import RunResult
from harness.judging.explain import case_lines, variant_lines
from harness.runner import RunConfig, execute
from tests.conftest import CASES, DEFAULT_CASES, VIDEO_CASES

pytestmark = pytest.mark.parity


def run_model(name: str, out: Path) -> RunResult:
    """The default cases on the base path; these models take no video, so the video cases are skipped, with
    the reason, and only those."""
    run = execute(RunConfig(cases=[CASES], out=out, model=name, variants=["base"]), progress=lambda _: None)
    skipped = {c.case_id: c.reasons for c in run.cases if c.verdict == "skipped"}
    assert set(skipped) == VIDEO_CASES and all("takes no video" in r[0] for r in skipped.values()), skipped
    run.cases = [c for c in run.cases if c.verdict != "skipped"]
    return run


@pytest.mark.parametrize("name", ["tiny-llava", "tiny-idefics3", "tiny-lfm2-vl-1head"])
def test_architecture_passes_the_default_cases(name: str, tmp_path: Path) -> None:
    run = run_model(name, tmp_path)
    assert run.status == "complete" and len(run.cases) == DEFAULT_CASES - len(VIDEO_CASES)
    assert all(c.reference_source.startswith("stored: ") for c in run.cases)  # recorded in references/
    failing = {c.case_id: case_lines(c) for c in run.cases if c.verdict != "pass"}
    assert not failing, failing
    assert max(c.comparison.prefill_max for c in run.cases) < 1e-4
    # A clean run pays nothing for localization: no probe started, no ladder.
    assert not any(c.ladder for c in run.cases) and not list(tmp_path.rglob("probe-*.log"))


def test_lfm2_vl_two_heads_is_the_known_vllm_rotary_bug(tmp_path: Path) -> None:
    run = run_model("tiny-lfm2-vl", tmp_path)
    assert run.status == "complete" and run.verdict == "pass"  # known failures are on record, not failures
    assert {c.verdict for c in run.cases} == {"known"}
    for case in run.cases:
        cell = case.variants["batched"]
        known = cell.notes[0]
        assert known.kind == "known_failure" and known.data["reproduction"] == "repro/vllm_cpu_rotary_3d.py"
        assert variant_lines(cell)[0].startswith("known failure: vLLM CPU bug: vllm._custom_ops.rotary_embedding")
        assert cell.comparison.prompt_ids_match and cell.comparison.prefill_max > 0.1
