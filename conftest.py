"""Loads the vlm-parity pytest plugin for this repository's own suite.

The suite writes nothing into the repository: unless `--parity-out` says where, the parity run's
results and report go to a temporary folder (its path is printed at the end of the parity run).
"""
import tempfile
from pathlib import Path

import pytest

pytest_plugins = ["harness.pytest_plugin"]


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("parity_out", None) is None:
        config.option.parity_out = Path(tempfile.mkdtemp(prefix="vlm-parity-report-"))
