"""Shared fixtures for the harness's own tests."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.inputs.cases import load_cases
from harness.inputs.models import DEFAULT_MODEL, default_model_dir

CASES = Path(__file__).resolve().parents[1] / "cases"
DEFAULT_CASES = len(load_cases([CASES]).cases)
VIDEO_CASES = {c.id for c in load_cases([CASES]).cases if c.videos}  # skipped where a model or adapter takes none
FAKE = "tests.fake_engine:FakeEngine"


@pytest.fixture(scope="session")
def tiny_model() -> str:
    """The built-in default model by name (built once into the cache): runs on the default cases find its
    committed stored references, so they start no live reference."""
    default_model_dir()
    return DEFAULT_MODEL


@pytest.fixture(scope="session")
def tiny_model_dir() -> Path:
    """The default model's checkpoint folder, for tests that copy or edit it."""
    return default_model_dir()


@pytest.fixture(scope="session")
def vllm_server(tiny_model_dir: Path) -> Iterator[tuple[Any, str]]:
    """One real vLLM OpenAI server on 127.0.0.1 for every test that attaches to a server (started by the
    test, not the harness; stopped by its process group at the end of the session)."""
    from tests.servers import vllm_server as serve

    with serve(tiny_model_dir) as (proc, url):
        yield proc, url


def write_case_file(path: Path, body: str) -> Path:
    path.write_text(body)
    return path
