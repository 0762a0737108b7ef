"""Report, tables, step summary, history regressions and the release gate, from synthetic runs."""
from __future__ import annotations

import json
import random
from pathlib import Path

import pandas as pd
import pytest

from harness.cli import main
from harness.core.notes import note
from harness.core.schema import Ladder, Rung, RunResult
from harness.publish.attention import attention, headline, known_records
from harness.publish.gate import FAIL, PASS, UNDECIDED, decide, load_gate_config
from harness.publish.history import load_history, regressions, summarize_run
from harness.publish.outcome import conclude
from harness.publish.report import publish
from harness.publish.report.summary import markdown_summary, write_step_summary
from harness.publish.results import write_results
from tests.factories import synthetic_case, synthetic_run, with_known

HOSTILE = '<script>alert(1)</script></table><img src=x onerror="alert(2)">'


def test_model_output_with_html_renders_as_text(tmp_path: Path) -> None:
    run = synthetic_run(3)
    case = synthetic_case(99, random.Random(1), "fail", output_text=HOSTILE)
    case.prompt_text = HOSTILE
    case.tags.append("<b>tag</b>")
    case.reasons.append(HOSTILE)
    case.tokens = {k: HOSTILE for k in case.tokens}  # the outputs are shown token by token
    case.engine.error = HOSTILE
    run.cases.append(case)
    html = publish(run, tmp_path).html.read_text()
    assert html.count("&lt;script&gt;alert(1)&lt;/script&gt;") > 16
    assert HOSTILE not in html and "<script>alert(1)" not in html and 'onerror="alert(2)"' not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&lt;/table&gt;" in html
    assert html.count("</table>") == html.count("<table")


def test_failing_case_has_divergence_highlight_and_chart_data(tmp_path: Path) -> None:
    run = synthetic_run(10)
    failing = [c for c in run.cases if c.verdict == "fail"]
    assert failing and failing[0].comparison.first_divergence == 5
    html = publish(run, tmp_path).html.read_text()
    assert html.count('class="tok first-div"') == 2 * len(failing)  # both sides, per failing case
    assert f'class="chart" data-chart="{failing[0].case_id}::batched"' in html
    # each detailed case carries its charts' data beside its detail
    scripts = [json.loads(part.split("</script>", 1)[0]) for part in html.split('class="chart-data">')[1:]]
    charts = {key: chart for script in scripts for key, chart in script["charts"].items()}
    assert charts[f"{failing[0].case_id}::batched"]["spans"] == [[1, 13]]
    assert all("floor" in script for script in scripts) and not any("floor" in c for c in charts.values())
    assert "First divergence at output token 5" in html


def test_tables_and_step_summary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    run = synthetic_run(30)
    run.notes.append(note("no_floor", reason="the reference engine cannot recompute"))
    run.cases[0].notes.append(note("not_image_sensitive", moved=None, bound=0.01))
    run.cases[0].variants["alone"].notes.append(note("base_skipped", base="batched", reason="no images"))
    outcome = conclude(run)
    html = publish(run, tmp_path / "out", outcome).html.read_text()
    write_step_summary(run, outcome)
    # Notes reach the page and the summary in explain's words: the run's, the case's, the variant's.
    run_note = "no floors: the reference engine cannot recompute; every metric is judged by its absolute ceiling alone"
    assert f"⚠ {run_note}" in html and '<small class="warning">⚠1</small>' in html
    assert "not image-sensitive: with flat grey images the reference&#39;s logprobs after the image move by at " \
           "most – (&lt; 0.01)" in html
    assert "not compared with batched: it was skipped (no images)" in html
    frame = pd.read_parquet(tmp_path / "out" / "cases.parquet")
    # One row per case and variant: 30 batched cells, and an `alone` cell for the 29 cases that reached the engine.
    assert len(frame) == 59 and set(frame.verdict) == {"pass", "fail", "error"}
    assert set(frame[frame.variant == "alone"].verdict) == {"pass"}
    assert pd.read_csv(tmp_path / "out" / "cases.csv").shape[0] == 59
    text = summary.read_text()
    assert text.startswith("## vlm-parity: FAIL") and "case-0009" in text and "| fail |" in text
    assert f"- ⚠ {run_note}" in text and "batched: engine error (attempt 1): ValueError: bad request" in text
    assert outcome.gate.code == FAIL


def test_history_flags_throughput_drop_and_new_failures(tmp_path: Path) -> None:
    history = tmp_path / "history.jsonl"
    good = synthetic_run(10, fail_every=1000, error_every=1000, throughput=9443.0)
    publish(good, tmp_path / "night1", conclude(good, history))
    bad = synthetic_run(10, fail_every=5, error_every=1000, throughput=857.0)
    outcome = conclude(bad, history)
    published = publish(bad, tmp_path / "night2", outcome)
    assert any(r.startswith("throughput_tok_s 9443 -> 857 (-91%") for r in outcome.regressions)
    assert any(r.startswith("new failures: case-0004, case-0009") for r in outcome.regressions)
    assert len(load_history(history)) == 2
    html = published.html.read_text()
    assert 'class="banner" id="regressions"' in html and "REGRESSION" in html
    assert 'id="trend-throughput_tok_s"' in html


def test_noise_is_not_a_regression() -> None:
    bands = load_gate_config()["regressions"]
    a = summarize_run(synthetic_run(10, fail_every=1000, error_every=1000, seed=1, throughput=1000))
    b = summarize_run(synthetic_run(10, fail_every=1000, error_every=1000, seed=2, throughput=920))
    assert regressions(a, b, bands) == []


def test_gate_policies() -> None:
    policies = load_gate_config()["policies"]
    good = synthetic_run(12, fail_every=1000, error_every=1000)
    assert decide(good, "default", policies["default"]).code == PASS
    bad = synthetic_run(12, fail_every=4, error_every=1000)
    decision = decide(bad, "default", policies["default"])
    assert decision.code == FAIL and decision.reasons[0].startswith("case-0003: fail:")
    known = dict(policies["release"], allowed_failures=[
        {"case": c.case_id, "reason": "known"} for c in bad.cases if c.verdict != "pass"])
    assert decide(bad, "release", known).code == PASS
    photos_only = decide(bad, "photos", policies["photos"])  # no case is tagged photo: nothing to decide on
    assert photos_only.code == UNDECIDED
    bad.cases[3].tags.append("photo")
    assert decide(bad, "photos", policies["photos"]).code == FAIL
    assert decide(good, "x", {"metrics": {"rouge_l_min": 0.5, "prefill_max": 1.0}}).code == PASS
    assert decide(bad, "x", {"metrics": {"rouge_l_min": 0.9}}).reasons[0].startswith("case-0003: fail")
    unfinished = RunResult(cases=good.cases, status="running")
    assert decide(unfinished, "default", policies["default"]).code == UNDECIDED


def test_gate_cli_exit_codes(tmp_path: Path) -> None:
    write_results(synthetic_run(12, fail_every=1000, error_every=1000), tmp_path / "good")
    write_results(synthetic_run(12), tmp_path / "bad")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "results.json").write_text('{"schema_version": 1, "cases": [{"verdict"')
    assert main(["gate", str(tmp_path / "good" / "results.json")]) == 0
    assert main(["gate", str(tmp_path / "bad" / "results.json")]) == 1
    assert main(["gate", str(tmp_path / "broken" / "results.json")]) == 2
    assert main(["gate", str(tmp_path / "missing.json")]) == 2
    assert main(["gate", str(tmp_path / "good" / "results.json"), "--policy", "nope"]) == 2


RECORD = "Engine bug: the cache drops images. Found by the alone variant on every case."


def known_run(n: int = 30) -> RunResult:
    """A synthetic run whose `alone` cell is a known failure of one record on every passing case."""
    run = synthetic_run(n)
    return with_known(run, [c.case_id for c in run.cases if c.verdict == "pass"], "alone", RECORD, "repro/cache.py")


def test_attention_groups_one_bug_as_one_row_and_known_failures_by_record() -> None:
    run = known_run()
    groups = attention(run)
    # errors first; the three cases failing the same metrics on the same variant are one group
    assert [(g.level, g.variants, len(g.cells)) for g in groups] == [("error", ("batched",), 1), ("fail", ("batched",), 3)]
    assert groups[1].cases == ["case-0009", "case-0019", "case-0029"] and "prefill_max" in groups[1].metrics
    assert not any(c.level == "known" for g in groups for c in g.cells)
    (record,) = known_records(run)
    assert record.title == "Engine bug: the cache drops images." and record.variants == ["alone"]
    assert len(record.cases) == record.cells == 26 and record.reproduction == "repro/cache.py"
    assert headline(run) == "29 of 59 cells pass; 26 known in 1 record; 3 fail; 1 error"
    # a ladder's first differing stage is part of the signature: a case probed elsewhere is its own group
    run.case("case-0009").variants["batched"].ladder = Ladder("batched", [Rung("vision", "differs")], "vision")
    assert [(g.stage, len(g.cells)) for g in attention(run) if g.level == "fail"] == [(None, 2), ("vision", 1)]


def test_report_and_summary_fold_known_failures(tmp_path: Path) -> None:
    run = known_run()
    html = publish(run, tmp_path).html.read_text()
    attention_html = html.split('id="attention"', 1)[1].split('id="known"', 1)[0]
    assert "Needs attention (2 groups, 4 cells)" in html and RECORD not in attention_html
    assert '<details id="known"><summary><h2>Known failures (26 cells in 1 record)</h2>' in html
    text = markdown_summary(run)
    assert "**29 of 59 cells pass; 26 known in 1 record; 3 fail; 1 error**" in text
    assert "| fail on batched: " in text and "3 in 3 cases: case-0009, case-0019, case-0029 |" in text
    assert "<summary>Known failures (26 cells in 1 record)</summary>" in text
    assert text.count("| Engine bug: the cache drops images. | alone | 26: ") == 1


def test_known_failures_that_need_a_person_are_under_attention(tmp_path: Path) -> None:
    """A record that no longer matches (XPASS) and a known cell new since the history's last run are each one
    group under "Needs attention"; the other known cells stay folded."""
    history = tmp_path / "history.jsonl"
    before = synthetic_run(30)
    conclude(before, history)  # every passing case passed `alone`
    run = known_run()
    fixed = run.case("case-0000").variants["batched"]
    fixed.notes.append(note("known_unmatched", reason="Engine bug: batching drops images.", reproduction="repro/b.py"))
    conclude(run, history)
    new = [c for c in run.cases if any(n.kind == "known_new" for v in c.variants.values() for n in v.notes)]
    assert len(new) == 26  # every known cell passed last time
    groups = {g.level: g for g in attention(run)}
    assert list(groups) == ["error", "fail", "new-known", "xpass"]
    assert len(groups["new-known"].cells) == 26 and groups["new-known"].metrics == ("repro/cache.py",)
    assert "new to this run" in groups["new-known"].line and RECORD in groups["new-known"].line
    assert groups["xpass"].cases == ["case-0000"] and "may be fixed" in groups["xpass"].line
    # the next run with the same known cells: nothing new any more
    again = known_run()
    conclude(again, history)
    assert [g.level for g in attention(again)] == ["error", "fail"]
    html = publish(run, tmp_path / "report").html.read_text()
    assert 'class="att-xpass"' in html and 'class="att-new-known"' in html
