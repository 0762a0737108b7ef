"""The whole suite against a clean sample (issue 29): per-metric multiples, `vlm-parity calibrate`, the rank test
that sees an engine-wide drift no cell shows, and the release gate that refuses it."""
from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from harness import config
from harness.calibrate import (
    Clean,
    calibration_rows,
    proposal_yaml,
    propose,
    record_clean,
)
from harness.cli import main
from harness.core.provenance import Provenance
from harness.core.schema import (
    CaseComparison,
    CaseResult,
    Finding,
    RunResult,
    VariantResult,
)
from harness.judging.compare.verdict import check_metric
from harness.judging.diagnosis import diagnose
from harness.judging.suite import SuiteRule, cell_ratios, shift_test
from harness.publish.gate import decide, load_gate_config
from harness.publish.history import summarize_run
from harness.publish.report import publish
from harness.publish.results import write_results
from harness.run.options import RunConfig
from harness.run.references import clean_sample_path, load_clean_sample
from harness.run.variants import load_variants
from harness.runner import execute
from tests.conftest import CASES

RULE = SuiteRule.of(config.resolve_section(config.load_config(), "suite"))
METRICS = ("prefill_max", "prefill_mean", "prefill_p99")


def ratio_run(n: int, scale: float = 1.0, seed: int = 0, model: str = "tiny-qwen2-vl-trained") -> RunResult:
    """A complete run of `n` passing cells whose ratios to the floor are clean-looking (log-normal around 0.8),
    times `scale`."""
    rng = random.Random(seed)
    cases = []
    for i in range(n):
        cmp = CaseComparison()
        cmp.checks = {m: Finding(m, "pass", 1e-6, floor=1e-6, ratio=scale * 0.8 * rng.lognormvariate(0, 0.35))
                      for m in METRICS}
        cell = VariantResult("batched", "pass", comparison=cmp)
        cases.append(CaseResult(f"case-{i}", "pass", variants={"batched": cell}))
    p = Provenance(engine="vllm", engine_version="0.32.0", model="/m/tiny", model_name=model, dtype="float32",
                   reference_dtype="float32", hardware={"cpu": "AMD EPYC"})
    return RunResult(provenance=p, cases=cases, variants=[load_variants().get("batched").describe()],
                     status="complete")


def test_a_metric_takes_its_own_multiples_where_calibrated() -> None:
    """prefill_mean's clean spread is tight: its own k (5.5 in float32) judges it, prefill_max keeps the dtype's 8."""
    th = config.resolve(config.load_config(), "float32")
    assert config.multiple(th, "prefill_mean", "k") < config.multiple(th, "prefill_max", "k") == th["k"]
    floor = 1e-6
    at_6x = 6 * floor + th["prefill_mean_atol"]
    assert check_metric("prefill_mean", at_6x, th, floor).level == "fail"
    assert check_metric("prefill_max", 6 * floor + th["prefill_max_atol"], th, floor).level == "drift"
    case = config.resolve(config.load_config(), "float32", case_overrides={"prefill_mean_k": 9})
    assert check_metric("prefill_mean", at_6x, case, floor).level == "drift"
    everything = config.resolve(config.load_config(), "float32", case_overrides={"k": 12})  # `k` means every metric
    assert config.multiple(everything, "prefill_mean", "k") == config.multiple(everything, "decode_max", "k") == 12


def test_a_whole_suite_moved_by_a_few_floors_drifts_while_a_clean_one_holds() -> None:
    clean = cell_ratios(ratio_run(266, seed=1))
    again = shift_test(cell_ratios(ratio_run(266, seed=2)), clean, "clean.json", RULE)
    assert [s.metric for s in again] == list(METRICS) and not any(s.drifts for s in again)
    moved = shift_test(cell_ratios(ratio_run(266, scale=3.4, seed=2)), clean, "clean.json", RULE)
    assert all(s.drifts and s.p_value < 1e-20 and 3 < s.shift < 4 for s in moved), moved
    # A few cells far out do not move the median: no drift.
    tail = cell_ratios(ratio_run(266, seed=3))
    tail["prefill_max"][:5] = [40.0] * 5
    assert not any(s.drifts for s in shift_test(tail, clean, "clean.json", RULE))
    assert shift_test(cell_ratios(ratio_run(10, scale=5)), clean, "clean.json", RULE) == []  # too few cells


def test_suite_drift_is_a_run_finding_the_gate_refuses_and_the_report_says(tmp_path: Path) -> None:
    run = ratio_run(266, scale=3.4, seed=2)
    run.suite = shift_test(cell_ratios(run), cell_ratios(ratio_run(266, seed=1)), "tiny/clean/vllm-float32.json",
                           RULE)
    gates = load_gate_config()
    assert run.verdict == "pass"  # no case fails
    for policy in ("default", "release"):
        decision = decide(run, policy, {**gates["policies"][policy], "min_cases": 1})
        assert decision.label == "fail", decision.reasons
        assert any(r.startswith("the whole engine drifted: suite drifted on prefill_mean") for r in decision.reasons)
    assert diagnose(run)[0].startswith("the whole engine drifted against its clean sample: prefill_max median")
    html = publish(run, tmp_path / "report").html.read_text()
    assert 'id="suite-drift"' in html and "The whole engine drifted" in html
    entry = summarize_run(run)
    assert entry["suite_drift"] == list(METRICS) and entry["suite"]["prefill_mean"]["n"] == 266
    run.suite = []
    assert decide(run, "default", {**gates["policies"]["default"], "min_cases": 1}).label == "pass"


def test_calibrate_proposes_multiples_prints_entries_a_thresholds_file_takes_and_records_the_sample(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert propose(2.2, 1) == (3.5, 5.5) and propose(12.15, 2) == (5.0, 8.5)
    assert propose(0.3, 1) == (1.5, 2.0)  # never below a clean run's ordinary cell
    cleans = [Clean(Path(f"r{i}.json"), ratio_run(100, seed=i)) for i in range(3)]
    rows = calibration_rows(cleans)
    assert [(r["dtype"], r["metric"], r["n"]) for r in rows] == [("float32", m, 300) for m in sorted(METRICS)]
    snippet = proposal_yaml(rows, "vlm-parity calibrate r0.json r1.json r2.json")
    file = tmp_path / "mine.yaml"
    file.write_text(snippet)
    layered = config.resolve(config.load_config(file), "float32")
    row = next(r for r in rows if r["metric"] == "prefill_max")
    assert config.multiple(layered, "prefill_max", "k") == row["k"]  # the file takes what was proposed
    (path,) = record_clean(cleans, tmp_path / "refs", "vlm-parity calibrate r0.json r1.json r2.json")
    assert path == clean_sample_path(tmp_path / "refs", "tiny-qwen2-vl-trained", "vllm", "cpu", "float32")
    sample = load_clean_sample(path)
    assert len(sample["ratios"]["prefill_mean"]) == 300 and [r["cpu"] for r in sample["runs"]] == ["AMD EPYC"] * 3
    # the command, on results files
    for i, clean in enumerate(cleans):
        write_results(clean.run, tmp_path / f"run{i}")
    assert main(["calibrate", *(str(tmp_path / f"run{i}") for i in range(3))]) == 0
    printed = capsys.readouterr().out
    assert "3 clean runs, 1 models, machines: AMD EPYC" in printed and "prefill_mean" in printed
    assert main(["calibrate", str(tmp_path / "nothing")]) == 2


def test_the_default_model_has_a_clean_sample_for_vllm_in_float32_and_bfloat16() -> None:
    """What the default run and `pytest -m parity` test the whole suite against (recorded with `vlm-parity
    calibrate --record`): the cells of the default profile, with the machine and command that measured them."""
    for dtype in ("float32", "bfloat16"):
        sample = load_clean_sample(clean_sample_path(Path(__file__).resolve().parents[1] / "references",
                                                     "tiny-qwen2-vl-trained", "vllm", "cpu", dtype))
        assert sample is not None and sample["command"].startswith("vlm-parity calibrate")
        assert all(len(sample["ratios"][m]) >= RULE.min_cells for m in METRICS)
        assert all(run["cpu"] for run in sample["runs"])


@pytest.mark.engine
def test_vllm_on_an_output_head_moved_by_4e_6_fails_no_cell_but_the_suite_drifts(tmp_path: Path,
                                                                                  tiny_model: str) -> None:
    """An engine-side checkpoint whose output head carries 4e-6 relative noise (benchmarks/suite_drift.py): every
    cell within its bound, the whole suite a few floors out, and both gate policies refuse it."""
    from benchmarks.suite_drift import drifted_copy
    from harness.inputs.models import resolve_model

    model = drifted_copy(Path(resolve_model(tiny_model)), tmp_path / "model", "head", 4e-6)
    run = execute(RunConfig(cases=[CASES], out=tmp_path / "out", model=str(model), reference_model=tiny_model,
                            variants=["base"], localize="off"), progress=lambda _: None)
    assert all(c.verdict in ("pass", "known") for c in run.cases), [c.case_id for c in run.cases if c.verdict == "fail"]
    moved = {s.metric for s in run.suite if s.drifts}
    assert {"prefill_max", "prefill_mean", "prefill_p99"} <= moved, run.suite
    for policy in ("default", "release"):
        assert decide(run, policy, load_gate_config()["policies"][policy]).label == "fail"
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert {s["metric"] for s in saved["suite"] if s["drifts"]} == moved
