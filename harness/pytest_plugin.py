"""pytest plugin: `pytest -m parity` runs one test per case (test id = case id).

The engine and the reference run once per session, for exactly the cases
pytest selected (so `-k` narrows the run, not just the asserts); each test
then asserts its own case's verdict. results.json and the HTML report are
written when the run finishes.

Use from any repository: `pytest_plugins = ["harness.pytest_plugin"]` in its
conftest.py, and a test taking the `parity_case` and `parity_run` fixtures.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from harness.cases import load_cases
from harness.cli import parse_engine_option
from harness.decode import DECODERS
from harness.report import publish
from harness.runner import RunConfig, execute, problem_id
from harness.schema import CaseResult, RunResult

_SELECTED = pytest.StashKey[set]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("vlm-parity")
    group.addoption("--parity-engine", default="vllm", help="engine under test (default: vllm)")
    group.addoption("--parity-model", help="engine checkpoint (default: the built-in tiny Qwen2-VL)")
    group.addoption("--parity-reference-model", help="reference checkpoint (default: --parity-model)")
    group.addoption("--parity-cases", type=Path, action="append", help="case YAML file or folder (default: cases/)")
    group.addoption("--parity-dtype", default="float32")
    group.addoption("--parity-device", default="cpu")
    group.addoption("--parity-engine-option", type=parse_engine_option, action="append", default=[],
                    metavar="KEY=VALUE")
    group.addoption("--parity-report-dir", type=Path, default=None, help="default: reports/latest")
    group.addoption("--parity-decoder", default="pil", choices=sorted(DECODERS), help="decoder for the engine's images")
    group.addoption("--parity-decode-effect", choices=sorted(DECODERS),
                    help="also run the engine on this decoder's pixels")
    group.addoption("--parity-history", type=Path, help="JSON-lines history to append the run to")


def _cases(config: pytest.Config) -> list[Path]:
    return config.getoption("parity_cases") or [config.rootpath / "cases"]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """One test per case id, invalid cases included so their problems show up as failures."""
    if "parity_case" not in metafunc.fixturenames:
        return
    loaded = load_cases(_cases(metafunc.config))
    ids = [c.id for c in loaded.cases] + [problem_id(p) for p in loaded.problems]
    ids = list(dict.fromkeys(ids))
    metafunc.parametrize("parity_case", ids, ids=ids)


def pytest_collection_finish(session: pytest.Session) -> None:
    session.config.stash[_SELECTED] = {
        item.callspec.params["parity_case"] for item in session.items
        if hasattr(item, "callspec") and "parity_case" in item.callspec.params
    }


@pytest.fixture(scope="session")
def parity_run(request: pytest.FixtureRequest) -> RunResult:
    """The whole run, executed once for the selected cases."""
    config = request.config
    out = config.getoption("parity_report_dir") or config.rootpath / "reports" / "latest"
    cfg = RunConfig(
        cases=_cases(config), out=out, engine=config.getoption("parity_engine"),
        model=config.getoption("parity_model"), reference_model=config.getoption("parity_reference_model"),
        dtype=config.getoption("parity_dtype"), device=config.getoption("parity_device"),
        engine_options=dict(config.getoption("parity_engine_option")), only=config.stash[_SELECTED],
        decoder=config.getoption("parity_decoder"), decode_effect=config.getoption("parity_decode_effect"),
    )
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    progress = (lambda line: reporter.write_line(line)) if reporter else print
    run = execute(cfg, progress)
    published = publish(run, out, config.getoption("parity_history"))
    for regression in published.regressions:
        progress(f"REGRESSION: {regression}")
    progress(f"parity report: {published.html}")
    return run


@pytest.fixture
def parity_result(parity_run: RunResult, parity_case: str) -> CaseResult:
    return parity_run.case(parity_case)
