"""The run's one resolved plan: both sides, thresholds and known failures worked out once by `make_plan`,
shared by the CLI's run, the pytest plugin (which plans once per session) and `record`."""
from __future__ import annotations

from pathlib import Path

import pytest

import harness.pytest_plugin
import harness.runner
from harness.inputs.models import DEFAULT_MODEL, resolve_model
from harness.run.options import RunConfig
from harness.run.plan import make_plan
from tests.conftest import CASES, FAKE

ROOT = Path(__file__).resolve().parents[1]


def test_make_plan_applies_every_default_once(tiny_model: str) -> None:
    plan = make_plan(RunConfig(cases=[CASES], dtype="bfloat16", variants=["base"]))
    assert (plan.engine.model_name, plan.engine.model) == (DEFAULT_MODEL, resolve_model(None))
    assert plan.reference.model == plan.engine.model and plan.reference.model_name == DEFAULT_MODEL
    assert (plan.engine.dtype, plan.reference.dtype) == ("bfloat16", "bfloat16")  # the reference follows the engine
    assert plan.reference.device == plan.engine.device == "cpu" and plan.overlap
    assert set(plan.floors) == {"bfloat16"} and plan.known and plan.thresholds["dtypes"]
    split = make_plan(RunConfig(cases=[CASES], dtype="bfloat16", reference_dtype="float32", reference_device="cuda",
                                variants=["base"]))
    assert (split.engine.dtype, split.reference.dtype, split.reference.device) == ("bfloat16", "float32", "cuda")
    assert not split.overlap  # a side off the CPU: never two processes on one accelerator unless asked


def test_narrow_keeps_the_resolution_and_follows_the_variants_kept(tiny_model: str) -> None:
    plan = make_plan(RunConfig(cases=[CASES], model=tiny_model, variants=["batched", "native"]))
    assert plan.paths.decoders == ["transformers"]  # native is compared with the reference on its own decoder
    narrow = plan.narrow({"text-only", "astronaut-420"}, ["batched"])
    assert [c.id for c in narrow.cases] == [c.id for c in plan.cases if c.id in {"text-only", "astronaut-420"}]
    assert [v.name for v in narrow.variants] == ["batched"] and narrow.paths.decoders == []
    assert narrow.engine is plan.engine and narrow.known is plan.known and narrow.selection.partial
    assert set(narrow.case_skips) == {"text-only", "astronaut-420"}


def test_the_plugin_plans_once_per_session(tmp_path: Path, tiny_model: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Test ids come from the plan, and the run executes that plan: `make_plan` runs once, not again in
    `execute`."""
    calls = []

    def counted(*args, **kwargs):
        calls.append(args)
        return make_plan(*args, **kwargs)

    monkeypatch.setattr(harness.pytest_plugin, "make_plan", counted)
    monkeypatch.setattr(harness.runner, "make_plan", counted)
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "conftest.py").write_text('pytest_plugins = ["harness.pytest_plugin"]\n')
    (suite / "test_cells.py").write_text("def test_cell(parity_result):\n    assert parity_result.verdict == 'pass'\n")
    code = pytest.main([str(suite), "-q", "-p", "no:cacheprovider", "-k", "text-only-batched or astronaut-420-batched",
                        f"--parity-engine={FAKE}", f"--parity-reference-engine={FAKE}", f"--parity-model={tiny_model}",
                        f"--parity-cases={CASES}", "--parity-variants=base", f"--parity-out={tmp_path / 'out'}",
                        "--parity-reference=live", f"--rootdir={suite}"])
    assert code == 0
    assert len(calls) == 1
    assert (tmp_path / "out" / "results.json").is_file()


@pytest.mark.parametrize(("flag", "body", "named"), [
    ("--variants-file", "variants:\n  x:\n    reason: r\n    engine: {cuda_graphs: true}\n",
     "variant 'x': engine: unknown feature 'cuda_graphs'"),
    ("--thresholds", "dtypes:\n  float32:\n    prefil_max: {value: 1.0e-4, reason: typo}\n",
     "dtypes.float32.prefil_max: unknown metric 'prefil_max'"),
])
def test_a_bad_config_file_stops_the_run_before_any_engine_with_the_file_and_key(
        tmp_path: Path, tiny_model: str, capsys: pytest.CaptureFixture[str], flag: str, body: str, named: str) -> None:
    from harness.cli import main

    bad = tmp_path / "bad.yaml"
    bad.write_text(body)
    code = main(["run", "--engine", FAKE, "--reference-engine", FAKE, "--model", tiny_model, "--case", "text-only",
                 "--out", str(tmp_path / "out"), flag, str(bad)])
    printed = capsys.readouterr()
    assert code == 2
    assert f"{bad}: {named}" in printed.out + printed.err
    assert not (tmp_path / "out" / "logs").exists()  # no engine was started
