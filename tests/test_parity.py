"""The parity suite: one test per case, vLLM (or --parity-engine) vs the HF reference."""
import pytest

from harness.core.schema import CaseResult, VariantResult
from harness.judging.explain import lines

pytestmark = pytest.mark.parity


def test_case(parity_result: CaseResult | VariantResult) -> None:
    assert parity_result.verdict == "pass", "\n".join(lines(parity_result))
