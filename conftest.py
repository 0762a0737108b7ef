"""Loads the vlm-parity pytest plugin for this repository's own suite."""
pytest_plugins = ["harness.pytest_plugin"]
