"""Results that scale (issue 30): per-position data in a columnar store beside slim results, outputs spooled
past a memory limit, a report that embeds per-position data only where it is needed (the rest one `vlm-parity
show` away), shards merged with their stores, the history as a Parquet dataset, and the bench's scale part.
Fake and synthetic engines in this process: what is tested is the harness's own orchestration and storage."""
from __future__ import annotations

import json
import random
from dataclasses import asdict, replace
from pathlib import Path

import pandas as pd
import pytest

from harness.bench.figures import scale_figures
from harness.bench.measure import Measured
from harness.bench.scale import SyntheticEngine, split_shards, write_cases
from harness.cli import main
from harness.core.schema import POSITIONAL, Completion, EngineOutput, Scores, TokenLogprobs, to_dict
from harness.engines.base import EngineSettings, Request
from harness.judging.compare.distribution import _engine_logprob, distribution_stats, position_kl
from harness.publish.history import CELLS, RUNS, load_history
from harness.publish.outcome import conclude
from harness.publish.positions import COLUMNS, PositionStore, join, loaded, split
from harness.publish.report import html as report_html
from harness.publish.report import publish
from harness.publish.results import LOG_NAME, RESULTS_NAME, read_results, write_results
from harness.run import spool as spool_module
from harness.run.spool import Spool
from harness.runner import RunConfig, execute
from tests.conftest import CASES
from tests.factories import synthetic_run
from tests.inline import inline

FAKE = "tests.fake_engine:FakeEngine"
SUBSET = {"astronaut-420", "two-images", "text-only", "tiny-png"}


def fake_run(out: Path, tiny_model: str, **options) -> object:
    return execute(RunConfig(cases=[CASES], out=out, engine=FAKE, reference_engine=FAKE, model=tiny_model,
                             variants=["base", "alone", "repeat"], only=SUBSET, localize="off", **options),
                   lambda _: None, launcher=inline)


def test_split_and_join_give_back_the_case_the_judge_made() -> None:
    """Every per-position field, including the awkward ones: a side with fewer logprobs than ids, None inside a
    prompt, ranks, n > 1 answers, attempts, the floor's and both comparisons' positions, token texts."""
    run = synthetic_run(12)
    case = run.cases[0]
    engine = case.variants["batched"].engine
    entries = list(engine.prompt_logprobs[:-3])  # fewer logprobs than ids: a structural gap, kept
    entries[4] = None
    entries[5] = replace(entries[5], ranks=[1, 2, 3], rank=1)
    engine.prompt_logprobs = Scores.of(entries)
    engine.completions = [Completion([5, 6], [TokenLogprobs(5, -0.1, [(5, -0.1)])], "a b", "stop"),
                          Completion([], [], "", "length")]
    case.variants["batched"].attempts = [replace(engine, attempt=1, completions=[])]
    case.variants["alone"].against_base = case.variants["batched"].comparison
    for c in run.cases:
        slim, table = split(c)
        for obj in (slim.reference, slim.variants["batched"].engine, slim.variants["batched"].comparison):
            assert all(not getattr(obj, name) for name in POSITIONAL[type(obj)])  # nothing per position left
        assert not slim.tokens and table.num_rows > 0
        assert asdict(join(slim, table)) == asdict(c), c.case_id


def test_the_store_is_one_dataset_and_results_json_keeps_summaries_only(tmp_path: Path, tiny_model: str) -> None:
    out = tmp_path / "out"
    run = fake_run(out, tiny_model)
    assert run.status == "complete" and {c.case_id for c in run.cases} == SUBSET
    frame = pd.read_parquet(out / "positions")  # the folder is one dataset
    assert list(frame.columns) == list(COLUMNS) and set(frame.case_id) == SUBSET
    prompt = frame.query("source == 'engine' and variant == 'batched' and part == 'prompt'")
    assert len(prompt) == sum(len(c.engine.prompt_ids) for c in loaded(run, out).cases)
    assert set(frame.source) >= {"reference", "engine", "attempt:1", "comparison", "against_base"}
    # results.json: summaries, checks and the file of each case's rows; no per-position list anywhere
    data = json.loads((out / RESULTS_NAME).read_text())
    text = json.dumps(data["cases"])
    for name in ("prompt_logprobs", "prefill_diffs", "image_mask", "output_logprobs", "prompt_ids"):
        assert f'"{name}"' not in text, name
    assert all(c["positions"].startswith("positions/") for c in data["cases"])
    assert not (out / LOG_NAME).exists()  # the log it was spliced from: gone once results.json is whole
    # The run the runner returns holds no case's per-position data; read back, each is whole again.
    assert not any(c.reference.prompt_logprobs for c in run.cases)
    full = loaded(read_results(out), out)
    assert all(c.reference.prompt_logprobs and c.variants["batched"].comparison.prefill_diffs for c in full.cases)


def test_outputs_past_the_limit_wait_on_disk_and_the_verdicts_do_not_change(tmp_path: Path, tiny_model: str,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    held = fake_run(tmp_path / "held", tiny_model)
    spilled: list[int] = []
    full = Spool.full

    def recording(self: Spool, output: EngineOutput) -> EngineOutput:
        if id(output) in self.files:
            spilled.append(self.files[id(output)][1][0])
        return full(self, output)

    monkeypatch.setattr(spool_module, "LIMIT", 0)  # every output goes to disk as it arrives
    monkeypatch.setattr(Spool, "full", recording)
    fake_run(tmp_path / "spilled", tiny_model)
    assert len(set(spilled)) > 10  # each read back from its own place
    assert not (tmp_path / "spilled" / spool_module.DIR).exists()  # the scratch file goes with the engines
    spilled_run = read_results(tmp_path / "spilled")
    a, b = loaded(held, tmp_path / "held"), loaded(spilled_run, tmp_path / "spilled")
    assert [to_dict(c) for c in a.cases] == [to_dict(c) for c in b.cases]


def test_a_large_run_embeds_per_position_data_only_where_it_is_needed(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    run = synthetic_run(30)
    failing = [c.case_id for c in run.cases if c.verdict in ("fail", "error")]
    passing = [c.case_id for c in run.cases if c.verdict == "pass"]
    small = publish(run, tmp_path / "small").html.read_text()
    assert small.count('class="chart-data"') == len(run.cases)  # a small run: every case in full
    monkeypatch.setattr(report_html, "DETAIL_POSITIONS", 10)  # the same run, as if it were large
    big = publish(run, tmp_path / "big").html.read_text()
    assert big.count('class="chart-data"') == len(failing) and len(big) < len(small)
    charted = [(c, name) for c in run.cases if c.case_id in failing for name in report_html.attention_cells(c)
               if c.variants[name].comparison and c.variants[name].comparison.prefill_diffs]
    assert 0 < len(charted) < sum(len(run.case(c).variants) for c in failing)
    assert big.count('class="chart" data-chart=') == len(charted)  # only the cells at fault
    assert f"vlm-parity show {failing[0]} --variant alone --results" in big  # its passing cell, one command away
    assert f"vlm-parity show {passing[0]} --results" in big  # the rest: one command away
    assert f"vlm-parity show {failing[0]} --results" not in big
    chosen = publish(run, tmp_path / "chosen", detail=["auto", passing[0]]).html.read_text()
    assert chosen.count('class="chart-data"') == len(failing) + 1


def test_show_prints_a_case_from_the_store_and_writes_its_page(tmp_path: Path, tiny_model: str,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    run = fake_run(out, tiny_model)
    case = loaded(run, out).case("astronaut-420")
    assert main(["show", "astronaut-420", "--variant", "alone", "--results", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("astronaut-420: PASS\n") and "metrics of alone:" in printed
    assert f"prompt positions of alone ({len(case.reference.prompt_ids)}; " in printed
    assert "output, reference:" in printed
    assert main(["show", "astronaut-420", "--html", str(tmp_path / "page.html"), "--results", str(out)]) == 0
    page = (tmp_path / "page.html").read_text()
    assert page.count('class="chart-data"') == 1 and 'data-chart="astronaut-420::batched"' in page
    assert main(["show", "no-such-case", "--results", str(out)]) == 2
    assert "case 'no-such-case' is not in the results" in capsys.readouterr().out
    assert main(["show", "astronaut-420", "--variant", "nope", "--results", str(out)]) == 2


def test_merged_shards_bring_their_stores(tmp_path: Path, tiny_model: str) -> None:
    out = tmp_path / "out"
    fake_run(out, tiny_model)
    shards = split_shards(out, 3, tmp_path / "shards")
    assert main(["merge", *map(str, shards), "--out", str(tmp_path / "merged")]) == 0
    merged = read_results(tmp_path / "merged")
    assert sorted(c.case_id for c in merged.cases) == sorted(SUBSET)
    for case in merged.cases:
        assert PositionStore(tmp_path / "merged").load(case).reference.prompt_logprobs, case.case_id


def test_history_is_a_dataset_of_runs_and_cells_and_an_old_jsonl_imports(tmp_path: Path) -> None:
    history = tmp_path / "nightly"
    first, second = synthetic_run(10), synthetic_run(10, seed=1)
    second.provenance.date = "2026-11-22T00:00:00+00:00"
    conclude(first, history)
    outcome = conclude(second, history)
    assert len(outcome.history) == 2 and len(list((history / RUNS).glob("*.parquet"))) == 2
    cells = pd.read_parquet(history / CELLS)
    assert set(cells.date) == {first.provenance.date, second.provenance.date}
    worst = cells.query("metric == 'prefill_max'").groupby("date").value.max()
    assert len(worst) == 2 and worst.notna().all()
    html = publish(second, tmp_path / "report", outcome).html.read_text()
    assert 'id="trend-prefill_max"' in html  # the report's trend charts read the dataset
    old = tmp_path / "old.jsonl"
    conclude(first, old)
    conclude(second, old)
    assert main(["history", "import", str(old), str(tmp_path / "imported")]) == 0
    assert [e["date"] for e in load_history(tmp_path / "imported")] == [e["date"] for e in load_history(old)]
    assert main(["history", "import", str(old), str(tmp_path / "imported")]) == 0  # nothing twice
    assert len(load_history(tmp_path / "imported")) == 2


def test_distribution_stats_equal_the_per_position_definition() -> None:
    """The vectorized statistics are `position_kl` and `_engine_logprob` at every position: ids listed twice,
    ids missing from the engine's top-k, empty top-k on either side, positions either side did not score."""
    rng = random.Random(0)

    def entry(tid: int) -> TokenLogprobs:
        top = sorted(((rng.randint(0, 12), -rng.random() * 5) for _ in range(rng.choice([0, 3, 5]))),
                     key=lambda t: -t[1])
        return TokenLogprobs(tid, -rng.random() * 3, top)

    reference = [None] + [entry(rng.randint(0, 12)) for _ in range(2000)]
    engine = [None] + [entry(r.token_id) if rng.random() < 0.9 else None for r in reference[1:]]
    pairs = [(r, e) for r, e in zip(reference, engine) if r is not None and e is not None]
    kls = [position_kl(r, e) for r, e in pairs if r.top and e.top]
    deltas = [pow(2.718281828459045, _engine_logprob(e, r.token_id)) - pow(2.718281828459045, r.logprob)
              for r, e in pairs]
    stats = distribution_stats(reference, engine)
    assert stats["kl_mean"] == pytest.approx(sum(kls) / len(kls), rel=1e-12)
    assert stats["kl_max"] == pytest.approx(max(kls), rel=1e-12)
    assert stats["delta_p_max"] == pytest.approx(max(map(abs, deltas)), rel=1e-9)


def test_the_synthetic_engine_gives_the_sizes_asked_for() -> None:
    engine = SyntheticEngine(EngineSettings("m", options={"positions": 300, "image_token": 7}))
    out = engine.output(Request("scale-00003", "p", "batched"))
    assert len(out.prompt_ids) == len(out.prompt_logprobs) == 300 and out.prompt_logprobs[0] is None
    assert all(len(p.top) == 5 and p.top[0] == (p.token_id, p.logprob) for p in out.prompt_logprobs[1:])
    assert out.prompt_ids.count(7) == 240 and len(out.output_ids) == 16
    assert engine.output(Request("scale-00003", "p", "alone")).prompt_logprobs == out.prompt_logprobs  # no noise


def test_scale_figures_take_the_targets_at_the_largest_size() -> None:
    def run(n: int, wall: float) -> dict[str, Measured]:
        report = {"run_s": wall, "harness_cpu_s": wall - 1.0, "synthetic_s": 1.0, "positions": n * 1000, "cells": n * 12, "results_mb": n * 0.04,
                  "store_mb": n, "html_mb": 6.0, "paint": {"first_paint_s": 1.0}}
        return {f"scale-run-{n}": Measured("run", wall, 500.0, 0, report),
                **{f"scale-{k}-{n}": Measured(k, 2.0, 200.0, 0, {"exit": 0}) for k in ("report", "merge", "gate")}}

    figures = {f.name: f for f in scale_figures({**run(10, 11.0), **run(100, 101.0)}, [10, 100])}
    assert figures["100 cases: results.json"].ok is True and figures["10 cases: results.json"].ok is None
    assert figures["100 cases: harness work (run's CPU in its own thread) + report"].value == 102.0
    assert figures["marginal harness time per position, up to 100 cases"].value == pytest.approx(1000.0)


def test_bench_scale_part_end_to_end(tmp_path: Path, tiny_model: str) -> None:
    """The whole part at toy sizes: every measurement completes and every figure is there."""
    code = main(["bench", "--parts", "scale", "--scale-sizes", "2,4", "--scale-positions", "40",
                 "--model", tiny_model, "--out", str(tmp_path)])
    data = json.loads((tmp_path / "bench.json").read_text())
    assert code == 0, data["runs"]
    names = {f["name"] for f in data["figures"]}
    assert {"4 cases: results.json", "4 cases: peak memory, merge of 8 shards", "4 cases: index.html"} <= names
    run = data["runs"]["scale-run-4"]["report"]
    # the drifted case (every 100th, from the first) fails, the others pass: the synthetic sides agree but for it
    assert run["cells"] == 4 * 12 and run["counts"] == {"pass": 3, "known": 0, "fail": 1, "error": 0, "skipped": 0}
    assert (tmp_path / "work" / "scale-merged-4" / "results.json").is_file()


def test_write_cases_makes_n_cases_of_one_image(tmp_path: Path) -> None:
    path = write_cases(tmp_path, 3)
    data = json.loads(json.dumps(__import__("yaml").safe_load(path.read_text())))
    assert [c["id"] for c in data["cases"]] == ["scale-00000", "scale-00001", "scale-00002"]
    assert (tmp_path / Path(data["cases"][0]["images"][0])).is_file()


def test_write_results_of_a_read_run_is_stable(tmp_path: Path) -> None:
    run = synthetic_run(5)
    write_results(run, tmp_path)
    again = read_results(tmp_path)
    assert [to_dict(c) for c in again.cases] == [to_dict(c) for c in run.cases]
