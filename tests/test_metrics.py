"""The metrics' one declaration (`harness.core.schema.metric`): complete for every metric, the only list of them, and
the yardstick every thresholds, gate and case file is checked against when it is loaded."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from harness import config
from harness.cli import main
from harness.config import ConfigError
from harness.core.schema import METRIC_INFO, METRICS, RULES, SECTIONS, TABLE_METRICS, VIEWS, shown_in
from harness.inputs.cases import load_cases
from harness.judging.compare.floor import FLOOR_METRICS
from harness.judging.compare.verdict import JUDGED
from harness.publish.gate import load_gate_config
from harness.publish.history import BETTER, HEADLINE_FLOORS
from harness.publish.report.decode_effect import PAIRS
from harness.publish.results import write_results
from tests.factories import synthetic_run

HARNESS = Path(__file__).resolve().parent.parent / "harness"
DECLARED = {"better", "label", "section", "needs", "rule", "floor", "pooled", "shown", "headline", "unit", "order"}


def test_every_metric_is_declared_completely() -> None:
    assert len(METRICS) > 10 and len({info["label"] for info in METRIC_INFO.values()}) == len(METRICS)
    for name, info in METRIC_INFO.items():
        assert DECLARED <= set(info), name
        assert info["better"] in ("lower", "higher") and info["section"] in SECTIONS and info["label"], name
        assert info["rule"] in RULES and set(info["shown"]) <= set(VIEWS), name
        if info["rule"] in ("floor", "info"):  # judged (or shown) against the case's floor: one is measured
            assert info["floor"], name
        if info["pooled"]:  # shares a floor measured the same way, in the same direction
            pooled = METRIC_INFO[info["pooled"]]
            assert pooled["floor"] and pooled["better"] == info["better"] and pooled["unit"] == info["unit"], name
        assert info["headline"] in (None, "max" if info["better"] == "lower" else "min"), name  # the worst value
    # Each rule and view is used, and what the thresholds set is exactly what the rules take.
    assert {info["rule"] for info in METRIC_INFO.values()} == set(RULES)
    assert all(shown_in(view) for view in VIEWS)
    packaged = config.load_config()
    for dtype, keys in packaged["dtypes"].items():  # every key the rules take; a metric's own multiples optional
        assert set(config.REQUIRED_KEYS) <= set(keys) <= set(config.DTYPE_KEYS), dtype
        assert all(spec["reason"] for spec in keys.values()), dtype


def test_every_list_of_metrics_is_derived_from_the_declaration() -> None:
    assert TABLE_METRICS == shown_in("table") and PAIRS == shown_in("decode_effect")
    assert HEADLINE_FLOORS == shown_in("floor")
    assert FLOOR_METRICS == tuple(m for m in METRICS if METRIC_INFO[m]["floor"])
    assert set(JUDGED) == {m for m in METRICS if METRIC_INFO[m]["rule"] in ("floor", "info", "greedy", "bound")}
    assert [BETTER[n] for n in BETTER if n != "throughput_tok_s"] == [
        METRIC_INFO[m]["better"] for m in METRICS if METRIC_INFO[m]["headline"]]
    assert "direction" not in yaml.dump(load_gate_config()["regressions"])


def test_no_module_lists_metric_names_itself() -> None:
    """A literal list of metric names (two quoted names in a row, or on one line), or one excluded by name, is
    a second declaration that drifts: it must come from `harness.core.schema` (shown_in, judged_by, METRIC_INFO).
    Only the declaration and the comparators, which compute each metric of their section, name them."""
    name = "|".join(sorted(METRICS, key=len, reverse=True))
    quoted = rf"""["']({name})["']"""
    in_a_row = re.compile(rf"{quoted}\s*,\s*{quoted}")
    excluded = re.compile(rf"\bin\s*[(\[]\s*{quoted}\s*,?\s*[)\]]")
    on_one_line = re.compile(rf"""["']({name})["'](?![\w])""")
    found = []
    for path in sorted([*HARNESS.rglob("*.py"), *HARNESS.rglob("*.j2")]):
        if path == HARNESS / "core" / "schema.py" or path in {HARNESS / "judging" / "compare" / f"{s}.py" for s in SECTIONS}:
            continue
        text = path.read_text()
        where = path.relative_to(HARNESS.parent)
        found += [f"{where}: {m.group(0)!r}" for pattern in (in_a_row, excluded) for m in pattern.finditer(text)]
        for number, line in enumerate(text.splitlines(), 1):
            names = {m.group(1) for m in on_one_line.finditer(line)}
            if len(names) > 1:
                found.append(f"{where}:{number}: {sorted(names)}")
    assert not found, "metric names listed outside harness/core/schema.py:\n" + "\n".join(found)


def write(tmp_path: Path, name: str, doc: object) -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.mark.parametrize(("doc", "key", "message"), [
    ({"dtypes": {"float32": {"prefil_max": {"value": 1e-4}}}}, "dtypes.float32.prefil_max",
     "unknown metric 'prefil_max' (known: k, k_warn, greedy, prefill_max, prefill_max_atol"),
    ({"models": {"*-awq": {"bfloat16": {"kl_men": {"value": 0.1, "reason": "4-bit"}}}}},
     "models.*-awq.bfloat16.kl_men", "unknown metric 'kl_men'"),
    ({"dtypes": {"float32": {"same_top1": {"value": 0.9}}}}, "dtypes.float32.same_top1",
     "'same_top1' does not fit metric 'same_top1' (higher is better, rule 'floor'): use 'same_top1_min'"),
    ({"dtypes": {"float32": {"decode_mean": {"value": 1e-4}}}}, "dtypes.float32.decode_mean",
     "metric 'decode_mean' (rule 'info') takes no key here"),
    ({"dtypes": {"float32": {"rouge_l_atol": {"value": 0.1}}}}, "dtypes.float32.rouge_l_atol",
     "use 'rouge_l_min'"),
    ({"dtypes": {"float64": {"k": {"value": 4}}}}, "dtypes.float64", "unknown dtype"),
    ({"dtypes": {"float32": {"prefill_max": 1e-3}}}, "dtypes.float32.prefill_max", "must be a mapping with `value`"),
    ({"dtypes": {"float32": {"greedy": {"value": "nearly"}}}}, "dtypes.float32.greedy", "exact, topk"),
    ({"dtypes": {"float32": {"k": {"value": "8"}}}}, "dtypes.float32.k", "must be a number"),
    ({"models": {"*-awq": {"bfloat16": {"prefill_max": {"value": 0.5}}}}}, "models.*-awq.bfloat16.prefill_max",
     "must be a mapping with `value` and `reason`"),
    ({"reference": {"self_consistancy_max": {"value": 1}}}, "reference.self_consistancy_max", "unknown key"),
    ({"dtype": {}}, "dtype", "unknown section"),
])
def test_a_thresholds_file_that_names_an_unknown_key_fails_at_load(tmp_path: Path, doc: dict, key: str,
                                                                    message: str) -> None:
    path = write(tmp_path, "mine.yaml", doc)
    with pytest.raises(ConfigError) as raised:
        config.load_config(path)
    assert str(raised.value).startswith(f"{path}: {key}: ") and message in str(raised.value)
    assert "\n" not in str(raised.value)


def test_the_packaged_thresholds_are_checked_too(tmp_path: Path) -> None:
    packaged = yaml.safe_load((HARNESS / "config" / "thresholds.yaml").read_text())
    config.check_thresholds(packaged, "thresholds.yaml")
    del packaged["dtypes"]["bfloat16"]["kl_max_atol"]
    with pytest.raises(ConfigError, match=r"^thresholds.yaml: dtypes.bfloat16: missing kl_max_atol$"):
        config.check_thresholds(packaged, "thresholds.yaml")
    packaged["dtypes"]["bfloat16"]["prefil_max"] = {"value": 0.5, "reason": "typo"}
    with pytest.raises(ConfigError, match=r"^thresholds.yaml: dtypes.bfloat16.prefil_max: unknown metric"):
        config.check_thresholds(packaged, "thresholds.yaml")


def test_a_case_that_names_an_unknown_threshold_is_a_problem_of_that_case(tmp_path: Path) -> None:
    path = write(tmp_path, "cases.yaml", {"cases": [{"id": "c", "prompt": "hi", "thresholds": {"prefil_max": 1.0}},
                                                    {"id": "d", "prompt": "hi", "thresholds": {"kl_max": 1.0}}]})
    loaded = load_cases([path])
    assert [c.id for c in loaded.cases] == ["d"]
    (problem,) = loaded.problems
    assert (problem.case_id, problem.field) == ("c", "thresholds.prefil_max")
    assert problem.message.startswith("unknown metric 'prefil_max'")


GATE = yaml.safe_load((HARNESS / "config" / "gate.yaml").read_text())


@pytest.mark.parametrize(("change", "key", "message"), [
    ({"policies": {"release": {**GATE["policies"]["release"], "metrics": {"prefil_max": 1.0}}}},
     "policies.release.metrics.prefil_max", "unknown metric 'prefil_max'"),
    ({"policies": {"x": {"metrics": {"prefill_max_min": 1.0}}}}, "policies.x.metrics.prefill_max_min",
     "does not fit metric 'prefill_max' (lower is better"),
    ({"policies": {"x": {"required_metrics": ["prefill_max", "decode_maxx"]}}}, "policies.x.required_metrics[1]",
     "unknown metric 'decode_maxx'"),
    ({"policies": {"x": {"min_case": 3}}}, "policies.x.min_case", "unknown policy field"),
    ({"regressions": {**GATE["regressions"], "kl_max": {"factor": 10, "floor": 1e-5, "reason": "r"}}},
     "regressions.kl_max", "unknown metric 'kl_max' in the history"),
    ({"regressions": {"prefill_max": {"direction": "lower", "factor": 10, "floor": 1e-5, "reason": "r"}}},
     "regressions.prefill_max.direction", "not a field of a lower-is-better band"),
    ({"regressions": {"rouge_l_min": {"reason": "r"}}}, "regressions.rouge_l_min",
     "needs exactly one of drop, max_drop"),
])
def test_a_gate_file_that_names_an_unknown_metric_fails_at_load(tmp_path: Path, change: dict, key: str,
                                                                message: str) -> None:
    path = write(tmp_path, "gate.yaml", {**GATE, **change})
    with pytest.raises(ConfigError) as raised:
        load_gate_config(path)
    assert str(raised.value).startswith(f"{path}: {key}: ") and message in str(raised.value)


def test_the_cli_says_which_file_and_key_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_results(synthetic_run(12, fail_every=1000, error_every=1000), tmp_path / "run")
    gate = write(tmp_path, "gate.yaml", {"policies": {"default": {"metrics": {"prefil_max": 1.0}}}})
    assert main(["gate", str(tmp_path / "run" / "results.json"), "--gate-config", str(gate)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"vlm-parity gate: {gate}: policies.default.metrics.prefil_max: unknown metric")
    assert err.count("\n") == 1
