"""Shared fixtures for the harness's own tests."""
from __future__ import annotations

from pathlib import Path

import pytest

from harness.cases import load_cases
from harness.models import default_model_dir

CASES = Path(__file__).resolve().parents[1] / "cases"
DEFAULT_CASES = len(load_cases([CASES]).cases)


@pytest.fixture(scope="session")
def tiny_model() -> Path:
    """The built-in tiny Qwen2-VL (built once into the cache)."""
    return default_model_dir()


def write_case_file(path: Path, body: str) -> Path:
    path.write_text(body)
    return path
