"""`vlm-parity bench`: its pure parts (figures, table, JSON, synthetic cases), its probes' timers and
stream recorder, the process-tree memory sampler, and one end-to-end part on the fake engine.
No timed assertions: the figures are checked for how they are computed, never for their size."""
from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness.bench.figures import (
    all_figures,
    bench_json,
    covered,
    per_case_figures,
    scaling_figures,
    single_figures,
    table,
)
from harness.bench.measure import Measured, measure
from harness.bench.memory import PeakSampler, tree_rss
from harness.bench.probe import _observer
from harness.bench.synthetic import write_synthetic_cases
from harness.cli import main as cli_main
from harness.engines.base import EngineSettings, Request
from harness.inputs.cases import load_cases
from harness.run.observe import STAGES

FAKE = "tests.fake_engine:FakeEngine"


def _run(label: str, wall: float, peak: float | None = 100.0, report: dict | None = None, code: int = 0,
         cpu: float | None = None) -> Measured:
    return Measured(label, wall, peak, code, report or {}, cpu_s=cpu)


def _by_name(figures: list) -> dict:
    return {f.name: f for f in figures}


def test_single_figures_divide_the_run_by_its_engine_and_reference_alone() -> None:
    runs = {"single": _run("single", 30.0),
            "alone-reference-0": _run("alone-reference-0", 9.0, report={"total_s": 10.0, "run_s": 6.0}),
            "alone-engine-1": _run("alone-engine-1", 16.0, report={"total_s": 15.0, "run_s": 3.0})}
    figures = _by_name(single_figures(runs))
    assert figures["irreducible: engine + reference"].value == 25.0  # the stream's own time, not the probe's wall
    ratio = figures["single / irreducible"]
    assert ratio.value == pytest.approx(1.2) and ratio.ok is False and ratio.target == "<= 1.15"
    runs["single"] = _run("single", 27.0)
    assert _by_name(single_figures(runs))["single / irreducible"].ok is True
    assert _by_name(single_figures(runs))["single / irreducible, CPU seconds"].value is None  # not sampled
    for label, cpu in (("single", 33.0), ("alone-reference-0", 12.0), ("alone-engine-1", 18.0)):
        runs[label].cpu_s = cpu
    cpu_ratio = _by_name(single_figures(runs))["single / irreducible, CPU seconds"]
    assert cpu_ratio.value == pytest.approx(1.1) and cpu_ratio.ok is None  # a check on the wall ratio, no target


def test_a_failed_or_missing_run_is_not_measured_rather_than_zero() -> None:
    runs = {"single": _run("single", 30.0, code=2)}  # 2: the run itself did not complete
    ratio = _by_name(single_figures(runs))["single / irreducible"]
    assert ratio.value is None and ratio.ok is None and ratio.note == "not measured"
    assert "not measured" in table(single_figures(runs))


def test_per_case_speedup_is_judged_against_at_least_ten() -> None:
    runs = {"per-case-process": _run("per-case-process", 200.0), "per-case": _run("per-case", 50.0),
            "scale-16": _run("scale-16", 25.0)}
    figures = _by_name(per_case_figures(runs, 16))
    speedup = figures["per-case / harness"]  # judged on a fresh engine process per case
    assert speedup.value == 8.0 and speedup.ok is False and speedup.target == ">= 10.0"
    lower = figures["per-case, imports shared / harness"]
    assert lower.value == 2.0 and lower.ok is None


def test_scaling_marginal_costs_and_flatness() -> None:
    runs = {"scale-4": _run("scale-4", 20.0, 1000.0), "scale-16": _run("scale-16", 26.0, 1060.0),
            "scale-64": _run("scale-64", 50.0, 1300.0)}
    runs["scale-64"].peak_by_process_mb = {"11 harness.cli": 400.0, "12 harness.engines.worker": 700.0}
    figures = _by_name(scaling_figures(runs, [4, 16, 64]))
    largest = figures["64 cases, peak of its largest process"]
    assert largest.value == 700.0 and largest.note == "harness.engines.worker"
    assert figures["marginal cost per case, 4 -> 16"].value == 0.5
    assert figures["marginal cost per case, 16 -> 64"].value == 0.5
    assert figures["marginal memory per case, 16 -> 64"].value == 5.0
    assert figures["marginal s/case, last / first step"].value == 1.0
    assert figures["marginal s/case, last / first step"].ok is True
    runs["scale-64"] = _run("scale-64", 26.0 + 48 * 1.0)  # the per-case cost doubled: not flat
    assert _by_name(scaling_figures(runs, [4, 16, 64]))["marginal s/case, last / first step"].ok is False
    runs["scale-16"] = _run("scale-16", 19.0)  # noise larger than the cost of 12 cases
    flat = _by_name(scaling_figures(runs, [4, 16, 64]))["marginal s/case, last / first step"]
    assert flat.value is None and "noise" in flat.note


def test_stage_figures_come_from_the_probe_reports() -> None:
    runs = {"import-vllm": _run("import-vllm", 5.5),
            "load": _run("load", 4.0, report={"seconds": {"processor_load": 0.8}}),
            "alone-engine-1": _run("alone-engine-1", 16.0, report={"total_s": 15.0, "run_s": 3.0}),
            "single": _run("single", 30.0, report={
                "timers": {"seconds": {"judge": 0.4}, "calls": {"judge": 26}},
                "streams": [{"role": "reference", "total_s": 10.0, "start_s": 5.0, "end_s": 15.0},
                            {"role": "engine batched", "total_s": 16.0, "start_s": 6.0, "end_s": 22.0}],
                "stage_s": {"render": 1.5}})}
    figures = _by_name(all_figures(runs, ["stages"], 16, []))
    assert figures["import vllm (fresh interpreter)"].value == 5.5
    assert figures["load: processor_load"].value == 0.8
    assert figures["engine process: spawn, imports, load, start, close"].value == 12.0
    assert figures["single: judge (26 calls)"].value == 0.4
    assert figures["single: stage_s render"].value == 1.5
    # the two streams overlap: together they cover 5..22 s of the run's 30 s
    assert figures["single: while no engine stream runs (start-up, render, report)"].value == 13.0


def test_covered_counts_overlapping_spans_once() -> None:
    assert covered([]) == 0.0
    assert covered([(0.0, 2.0), (1.0, 3.0), (5.0, 6.0), (5.5, 5.8)]) == 4.0


def test_table_and_json_carry_every_figure() -> None:
    runs = {"matrix": _run("matrix", 45.0), "single": _run("single", 30.0),
            "matrix-alone-reference-0": _run("r", 9.0, report={"total_s": 10.0}),
            "matrix-alone-engine-1": _run("e1", 16.0, report={"total_s": 15.0}),
            "matrix-alone-engine-2": _run("e2", 12.0, report={"total_s": 11.0}),
            "alone-engine-1": _run("single's", 16.0, report={"total_s": 99.0})}  # not the matrix's
    figures = all_figures(runs, ["matrix"], 16, [])
    text = table(figures)
    assert "matrix / irreducible" in text and "1.25 x" in text and "yes" in text
    data = json.loads(json.dumps(bench_json(figures, runs, {"date": "today"})))
    assert [f["value"] for f in data["figures"][1:4]] == [26.0, 10.0, 45.0 / 36.0]
    assert data["runs"]["matrix"]["wall_s"] == 45.0


def test_each_path_costs_its_run_minus_the_base_run_as_a_share_of_the_default_run() -> None:
    runs = {"matrix-stored": _run("m", 80.0), "stored": _run("s", 40.0), "path-alone": _run("a", 44.0),
            "path-sampling": _run("b", 52.0)}
    figures = _by_name(all_figures(runs, ["paths"], 16, []))
    assert figures["alone: added to the base path"].value == 4.0
    assert figures["alone: added to the base path"].note == "5% of the default run"
    assert figures["sampling: added to the base path"].value == 12.0


def test_synthetic_cases_are_valid_deterministic_and_nested(tmp_path: Path) -> None:
    six = write_synthetic_cases(tmp_path / "six", 6)
    four = write_synthetic_cases(tmp_path / "four", 4)
    again = write_synthetic_cases(tmp_path / "again", 4)
    loaded = load_cases([six])
    assert not loaded.problems and [c.id for c in loaded.cases] == [f"syn-{i:04d}" for i in range(6)]
    assert (tmp_path / "four" / "cases.yaml").read_text() == (tmp_path / "again" / "cases.yaml").read_text()
    small, large = load_cases([four]).cases, loaded.cases[:4]
    assert [(c.messages, c.images and c.images[0].name) for c in small] == \
        [(c.messages, c.images and c.images[0].name) for c in large]
    for case in small:
        for image in case.images:
            assert image.read_bytes() == (tmp_path / "again" / "images" / image.name).read_bytes()
            assert image.read_bytes() == (tmp_path / "six" / "images" / image.name).read_bytes()
    assert again.is_file()


# A child that holds 150 MB and a grandchild that holds 100 MB until told to end.
_HOLDER = """
import subprocess, sys
block = bytearray({mb} * 2**20)
for i in range(0, len(block), 4096):
    block[i] = 1  # touch every page, so it is resident
child = None
if {spawn}:
    child = subprocess.Popen([sys.executable, "-c", {grandchild!r}], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    child.stdout.readline()
print("ready", flush=True)
sys.stdin.readline()
if child:
    child.communicate(b"\\n")
"""


def test_memory_sampler_sums_the_whole_process_tree() -> None:
    if not PeakSampler.available():
        pytest.skip("psutil is not installed")
    grandchild = _HOLDER.format(mb=100, spawn=False, grandchild="")
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER.format(mb=150, spawn=True, grandchild=grandchild)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert proc.stdout.readline().strip() == b"ready"
        sampler = PeakSampler(proc.pid)
        now = sampler.sample()
        assert now >= 250 * 2**20  # both processes' blocks: the sum over the tree, not the root alone
        own = sorted(sampler.peaks.values())
        assert len(own) == 2 and own[0] >= 100 * 2**20 and own[1] >= 150 * 2**20  # and each one's own peak
        assert sampler.cpu.keys() == sampler.peaks.keys() and all(cpu > 0 for cpu in sampler.cpu.values())
        proc.stdin.write(b"\n")
        proc.stdin.flush()
        proc.wait()
        assert tree_rss(proc.pid) == 0  # a process that is gone holds nothing
        assert sampler.peak == now
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_probe_whose_run_did_not_complete_is_not_ok() -> None:
    assert _run("single", 1.0, report={"exit": 1}).ok  # completed, some case failed: a full run
    assert not _run("single", 1.0, report={"exit": 2}).ok  # the run itself could not complete
    assert not _run("alone-engine-1", 1.0, code=1).ok  # the probe crashed


def test_measure_records_exit_code_and_log(tmp_path: Path) -> None:
    busy = "import sys; sum(range(3_000_000)); print('hi'); sys.exit(3)"
    m = measure("hello", [sys.executable, "-c", busy], tmp_path, report=False)
    assert m.exit_code == 3 and not m.ok
    assert Path(m.log).read_text().strip() == "hi"
    assert m.cpu_s is not None and m.cpu_s > 0  # the child's CPU time, counted once it was reaped


def test_bench_observer_saves_the_spec_and_times_each_stream(tmp_path: Path) -> None:
    """The bench hears the runner's streams through the observer interface (harness.run.observe)."""

    @dataclass
    class Side:
        run_s: float | None = None
        fatal: str | None = None

    def outputs(requests: list[Request], side: Side) -> Iterator[str]:
        yield from (r.case_id for r in requests)
        side.run_s = 0.5

    observer = _observer(tmp_path / "specs")
    requests = [Request("a", "prompt a", "base"), Request("b", "prompt b", "base", max_new_tokens=4)]
    side, other = Side(), Side()
    # Two streams opened before either is read, as a runner that reads them together does.
    engine = observer.stream("engine batched", "vllm", EngineSettings("model"), requests, outputs(requests, side), side)
    reference = observer.stream("reference", "hf", EngineSettings("ref"), requests[:1], outputs(requests[:1], other),
                                other)
    assert list(reference) == ["a"] and list(engine) == ["a", "b"]
    first, second = observer.streams
    assert first["role"] == "engine batched" and first["outputs"] == 2 and first["run_s"] == 0.5
    assert second["role"] == "reference" and second["outputs"] == 1 and first["spec"] != second["spec"]
    spec = json.loads(Path(first["spec"]).read_text())
    assert [Request.from_dict(r) for r in spec["requests"]] == requests
    assert EngineSettings.from_dict(spec["settings"]) == EngineSettings("model")


def test_every_stage_the_bench_measures_is_reported_by_a_run(tmp_path: Path, tiny_model: str) -> None:
    """A stage the runner stops reporting (renamed, removed) fails here, not silently in the bench's figures."""
    observer = _observer(None)
    code = cli_main(["run", "--engine", FAKE, "--reference-engine", FAKE, "--model", tiny_model, "--case", "tiny-png",
                     "--case", "text-only", "--variants", "base", "--decode-effect", "simplejpeg",
                     "--out", str(tmp_path)], observer)
    assert code in (0, 1)
    assert set(STAGES) <= set(observer.seconds), set(STAGES) - set(observer.seconds)
    assert [s["role"] for s in observer.streams] == ["reference", "engine batched+decoder-simplejpeg"]


def test_bench_single_part_end_to_end_on_the_fake_engine(tmp_path: Path, tiny_model: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """The orchestration: the run, each of its streams re-run alone on the recorded requests, the figures."""
    code = cli_main(["bench", "--quick", "--parts", "single", "--engine", FAKE, "--reference-engine", FAKE,
                     "--out", str(tmp_path)])
    assert code == 0, capsys.readouterr()
    printed = capsys.readouterr().out
    assert "single / irreducible" in printed
    data = json.loads((tmp_path / "bench.json").read_text())
    runs = data["runs"]
    streams = runs["single"]["report"]["streams"]
    assert [s["role"] for s in streams] == ["reference", "engine batched"]
    assert runs["alone-reference-0"]["report"]["outputs"] == streams[0]["outputs"] == 2
    assert runs["alone-engine-1"]["report"]["outputs"] == streams[1]["outputs"] == 2
    assert runs["single"]["report"]["stage_s"]  # the runner's own stage timings came through
    ratio = next(f for f in data["figures"] if f["name"] == "single / irreducible")
    assert ratio["value"] is not None and data["context"]["machine"]["cpus"]


def test_unknown_part_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["bench", "--parts", "single,speed", "--out", str(tmp_path)]) == 2
    assert "unknown part(s) speed" in capsys.readouterr().err
