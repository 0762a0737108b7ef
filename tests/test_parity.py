"""The parity suite: one test per case, vLLM (or --parity-engine) vs the HF reference."""
import pytest

from harness.schema import CaseResult

pytestmark = pytest.mark.parity


def test_case(parity_result: CaseResult) -> None:
    assert parity_result.verdict == "pass", "\n".join(parity_result.reasons)
