"""The parity suite: one test per case, vLLM (or --parity-engine) vs the HF reference."""
import pytest

from harness.core.schema import CaseResult, SuiteShift, VariantResult
from harness.judging.explain import lines
from harness.judging.suite import shift_text

pytestmark = pytest.mark.parity


def test_case(parity_result: CaseResult | VariantResult) -> None:
    assert parity_result.verdict == "pass", "\n".join(lines(parity_result))


def test_the_whole_suite_has_not_drifted(parity_suite: list[SuiteShift]) -> None:
    """Every selected cell's ratio to its floor, per metric, against the clean sample recorded for this model,
    engine and dtype (references/<model>/clean/): an engine-wide numerical change fails here before any cell."""
    moved = [shift_text(s) for s in parity_suite if s.drifts]
    assert not moved, "\n".join(moved)
