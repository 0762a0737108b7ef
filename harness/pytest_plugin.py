"""pytest plugin: `pytest -m parity` runs one test per case and variant (test id `case-variant`).

The reference and each engine configuration start once per session, for
exactly the cases and variants pytest selected (so `-k` narrows the run, not
just the asserts); each test then asserts its own cell's verdict. results.json
and the HTML report are written when the run finishes. The options are the
CLI's run options with a `--parity-` prefix (`harness.run.options`).

Use from any repository: `pytest_plugins = ["harness.pytest_plugin"]` in its
conftest.py, and a test taking the `parity_result` fixture; a test taking
`parity_suite` sees the whole suite against its clean sample (an engine-wide
drift no single cell shows: `harness.judging.suite`).
"""
from __future__ import annotations

import pytest

from harness.core.schema import CaseResult, RunResult, SuiteShift, VariantResult
from harness.inputs.cases import Case
from harness.run.known import KnownFailure
from harness.run.options import add_options, run_config
from harness.run.plan import RunPlan, make_plan
from harness.runner import run_and_publish

_PLAN = pytest.StashKey[RunPlan]()
_SELECTED = pytest.StashKey[set]()
PREFIX = "parity-"


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser.getgroup("vlm-parity").addoption, PREFIX, front="pytest")


def session_plan(config: pytest.Config) -> RunPlan:
    """The session's one plan, made at the first use: test ids, skips and known failures come from it, and
    the run executes it (narrowed to what pytest selected)."""
    if _PLAN not in config.stash:
        dest = PREFIX.replace("-", "_")
        config.stash[_PLAN] = make_plan(run_config(lambda name: config.getoption(dest + name), config.rootpath,
                                                   front="pytest"))
    return config.stash[_PLAN]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """One test per case and variant, from the run's own plan (skips with the plan's reasons, known
    failures as strict expected failures); invalid cases once, with the base variant, so their problems
    show up."""
    if "parity_case" not in metafunc.fixturenames:
        return
    plan = session_plan(metafunc.config)
    params = []
    for variant in plan.variants:
        skip = plan.skipped.get(variant.name)
        marks = [pytest.mark.skip(reason=f"variant {variant.name}: {skip}")] if skip else []
        params += [pytest.param(c.id, variant.name, id=f"{c.id}-{variant.name}",
                                marks=marks + _known(plan.known, c, variant.name)) for c in plan.cases]
    params += [pytest.param(case_id, plan.base, id=case_id) for case_id in plan.selection.errors]
    params += [pytest.param(case_id, plan.base, id=case_id, marks=pytest.mark.skip(reason=reason))
               for case_id, reason in plan.selection.skipped.items()]
    metafunc.parametrize(("parity_case", "parity_variant"), params)


def _known(known: list[KnownFailure], case: Case, variant: str) -> list[pytest.MarkDecorator]:
    """A known engine failure is an expected failure. One of failing metrics is strict: when the engine is fixed
    the test XPASSes and fails. One of engine errors is not: its condition is the error (a seeded request whose
    prompt was prefilled in chunks), which not every request it applies to meets, so a pass says nothing; nor is
    one that shows only `sometimes` (where a token other than the most likely is chosen)."""
    return [pytest.mark.xfail(strict=entry.strict, reason=f"known failure: {entry.reason}")
            for entry in known if entry.applies_to(case, variant)][:1]


def pytest_collection_finish(session: pytest.Session) -> None:
    session.config.stash[_SELECTED] = {
        (item.callspec.params["parity_case"], item.callspec.params["parity_variant"]) for item in session.items
        if hasattr(item, "callspec") and "parity_case" in item.callspec.params
        and not item.get_closest_marker("skip")
    }


@pytest.fixture(scope="session")
def parity_run(request: pytest.FixtureRequest) -> RunResult:
    """The whole run, executed once for the selected cases and variants."""
    selected = request.config.stash[_SELECTED]
    plan = session_plan(request.config)
    plan = plan.narrow({c for c, _ in selected}, sorted({v for _, v in selected}) or [plan.base])
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    progress = (lambda line: reporter.write_line(line)) if reporter else print
    done = run_and_publish(plan, progress)  # a line console: its closing summary is these two lines
    for regression in done.outcome.regressions:
        progress(f"REGRESSION: {regression}")
    progress(f"parity report: {done.html}")
    return done.run

@pytest.fixture
def parity_suite(parity_run: RunResult) -> list[SuiteShift]:
    """The selected cells' ratios to their floors against the clean sample, per metric (empty without one, or
    with too few cells selected to say)."""
    return parity_run.suite


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
