"""pytest plugin: `pytest -m parity` runs one test per case and variant (test id `case-variant`).

The reference and each engine configuration start once per session, for
exactly the cases and variants pytest selected (so `-k` narrows the run, not
just the asserts); each test then asserts its own cell's verdict. results.json
and the HTML report are written when the run finishes. The options are the
CLI's run options with a `--parity-` prefix (`harness.options`).

Use from any repository: `pytest_plugins = ["harness.pytest_plugin"]` in its
conftest.py, and a test taking the `parity_result` fixture.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from harness.cases import load_cases
from harness.engines import resolve_engine
from harness.known import KnownFailure, load_known
from harness.models import DEFAULT_MODEL, resolve_model
from harness.options import DEFAULT_CASES, add_options, run_config
from harness.plan import DECODER_PREFIX, engine_skip_reason, load_variants
from harness.report import publish
from harness.runner import execute, problem_id
from harness.schema import CaseResult, RunResult, VariantResult

_SELECTED = pytest.StashKey[set]()
PREFIX = "parity-"


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser.getgroup("vlm-parity").addoption, PREFIX)


def _get(config: pytest.Config):
    return lambda name: config.getoption(PREFIX.replace("-", "_") + name)


def _cases(config: pytest.Config) -> list[Path]:
    return _get(config)("cases") or [config.rootpath / DEFAULT_CASES]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """One test per case and variant; invalid cases once (with the base variant) so their problems show up."""
    if "parity_case" not in metafunc.fixturenames:
        return
    get = _get(metafunc.config)
    variant_set = load_variants(get("variants_file"))
    names = list(get("variants") or ["default"])
    if get("decode_effect"):
        names.append(DECODER_PREFIX + get("decode_effect"))
    engine = resolve_engine(get("engine"))
    model = resolve_model(get("model"))
    capabilities = engine.capabilities_for(model)
    known = load_known(get("model") or DEFAULT_MODEL, model, get("engine"), engine.version(), get("device"))
    loaded = load_cases(_cases(metafunc.config))
    params = []
    for variant in variant_set.select(names):
        skip = engine_skip_reason(variant, capabilities, get("engine"), get("device"))
        marks = [pytest.mark.skip(reason=f"variant {variant.name}: {skip}")] if skip else []
        params += [pytest.param(c.id, variant.name, id=f"{c.id}-{variant.name}", marks=marks + _known(known, c.id, variant.name))
                   for c in loaded.cases]
    bad = dict.fromkeys(problem_id(p) for p in loaded.problems)
    params += [pytest.param(case_id, variant_set.base, id=case_id) for case_id in bad]
    metafunc.parametrize(("parity_case", "parity_variant"), params)


def _known(known: list[KnownFailure], case_id: str, variant: str) -> list[pytest.MarkDecorator]:
    """A known engine failure is a strict expected failure: when the engine is fixed, the test XPASSes and fails."""
    return [pytest.mark.xfail(strict=True, reason=f"known failure: {entry.reason}")
            for entry in known if entry.applies_to(case_id, variant)][:1]


def pytest_collection_finish(session: pytest.Session) -> None:
    session.config.stash[_SELECTED] = {
        (item.callspec.params["parity_case"], item.callspec.params["parity_variant"]) for item in session.items
        if hasattr(item, "callspec") and "parity_case" in item.callspec.params
        and not item.get_closest_marker("skip")
    }


@pytest.fixture(scope="session")
def parity_run(request: pytest.FixtureRequest) -> RunResult:
    """The whole run, executed once for the selected cases and variants."""
    config = request.config
    get = _get(config)
    selected = config.stash[_SELECTED]
    cfg = run_config(get, only={c for c, _ in selected}, root=config.rootpath)
    cfg.variants = sorted({v for _, v in selected}) or cfg.variants
    cfg.decode_effect = None  # its variant is already among the selected ones
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    progress = (lambda line: reporter.write_line(line)) if reporter else print
    run = execute(cfg, progress)
    published = publish(run, cfg.out, get("history"), get("policy"), get("gate_config"))
    for regression in published.regressions:
        progress(f"REGRESSION: {regression}")
    progress(f"parity report: {published.html}")
    return run


@pytest.fixture
def parity_result(parity_run: RunResult, parity_case: str, parity_variant: str) -> VariantResult | CaseResult:
    """The case's result on this variant; the case itself when it never reached the engine
    (invalid case, reference failure). A variant the plan skipped skips the test."""
    case = parity_run.case(parity_case)
    result = case.variants.get(parity_variant)
    if result is None:
        return case
    if result.verdict == "skipped":
        pytest.skip(f"variant {parity_variant}: {'; '.join(result.reasons)}")
    return result
