"""Run plan, variants, capabilities and the runner's orchestration, with the fake engine from tests/
(registered by string, no vLLM), run in-process (tests/inline.py) unless the worker protocol is the point."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.cli import main
from harness.engines import resolve_engine
from harness.engines.client import stream
from harness.explain import case_lines
from harness.gate import UNDECIDED, decide, load_gate_config
from harness.merge import merge_runs
from harness.report import publish
from harness.report.summary import markdown_summary
from harness.results import read_results
from harness.runner import RunConfig, execute
from harness.schema import RunResult, upgrade_v1
from harness.variants import load_variants
from tests.conftest import CASES, DEFAULT_CASES, FAKE
from tests.inline import inline

SUBSET = {"astronaut-420", "two-images", "text-only"}
ALONE = """
variants:
  alone-check:
    reason: each case submitted by itself must equal the batched submission (batch invariance)
    request: {submit: alone}
    against: [reference, base]
  needs-embeddings:
    reason: precomputed image embeddings instead of pixels
    request: {image_input: embeddings}
    cases: images
"""


def fake_run(tmp_path: Path, tiny_model: str, engine: str = FAKE, variants: list[str] | None = None,
             options: dict | None = None, files: list[Path] | None = None, only: set[str] = SUBSET,
             launcher=inline) -> RunResult:
    return execute(RunConfig(cases=[CASES], out=tmp_path / "out", engine=engine, reference_engine=FAKE,
                             model=tiny_model, variants=variants, engine_options=options or {},
                             variants_files=files or [], only=only), progress=lambda _: None, launcher=launcher)


def variants_file(tmp_path: Path) -> Path:
    path = tmp_path / "variants.yaml"
    path.write_text(ALONE)
    return path


def test_a_variant_is_one_yaml_entry_and_an_engine_one_module(tmp_path: Path, tiny_model: str) -> None:
    run = fake_run(tmp_path, tiny_model, variants=["alone-check"], files=[variants_file(tmp_path)])
    assert [v["name"] for v in run.variants] == ["batched", "alone-check"]  # judged against base: base comes along
    assert run.status == "complete" and run.verdict == "pass"
    for case in run.cases:
        assert set(case.variants) == {"batched", "alone-check"} and case.headline == "batched"
        alone = case.variants["alone-check"]
        assert alone.verdict == "pass" and alone.comparison.prefill_max == 0.0
        assert alone.against_base is not None and alone.against_base.first_divergence is None
    # Both variants share engine settings: one engine start.
    assert len(run.provenance.engine_groups) == 1
    assert run.provenance.engine_groups[0].variants == ["batched", "alone-check"]


def test_variant_skipped_for_missing_capability_says_why(tmp_path: Path, tiny_model: str) -> None:
    run = fake_run(tmp_path, tiny_model, variants=["base", "needs-embeddings"], files=[variants_file(tmp_path)])
    assert run.skipped == {"needs-embeddings": "engine 'tests.fake_engine:FakeEngine' does not accept images as embeddings"}
    assert run.verdict == "pass"
    cell = run.case("astronaut-420").variants["needs-embeddings"]
    assert cell.verdict == "skipped" and "embeddings" in cell.reasons[0]
    html = publish(run, tmp_path / "out").html.read_text()
    assert "skipped: engine &#39;tests.fake_engine:FakeEngine&#39; does not accept images as embeddings" in html


def test_drift_fails_by_metric_naming_the_variant(tmp_path: Path, tiny_model: str) -> None:
    run = fake_run(tmp_path, tiny_model, options={"drift": 0.01})
    case = run.case("text-only")
    assert case.verdict == "fail" and case_lines(case)[0].startswith("batched: vs reference: prefill_max = 0.01 > ")
    finding = case.variants["batched"].failing[0]
    assert (finding.metric, finding.against, finding.value) == ("prefill_max", "reference", pytest.approx(0.01))


def test_reference_failure_is_that_case_error_while_the_engine_is_fine(tmp_path: Path, tiny_model: str) -> None:
    run = execute(RunConfig(cases=[CASES], out=tmp_path / "out", engine=FAKE, model=tiny_model, only=SUBSET,
                            reference_engine="tests.test_plan:FailingReference"), progress=lambda _: None,
                  launcher=inline)
    by_id = {c.case_id: c for c in run.cases}
    assert by_id["two-images"].verdict == "error" and by_id["two-images"].reasons == ["reference failed: fake failure"]
    assert by_id["text-only"].verdict == "pass" and by_id["astronaut-420"].verdict == "pass"
    assert run.status == "complete"


class FailingReference(resolve_engine(FAKE)):  # type: ignore[misc]
    """The fake engine as a reference that fails on one case."""

    def run(self, requests):
        for request in requests:
            if request.case_id == "two-images":
                from harness.schema import EngineOutput

                yield EngineOutput.failed(request.case_id, self.name, "fake failure", request.variant)
            else:
                yield self.output(request, 0.0)


def test_fatal_engine_error_mid_run_keeps_what_was_done(tmp_path: Path, tiny_model: str) -> None:
    """Through the real worker process: the client turns the death into a fault and errors in flight."""
    run = fake_run(tmp_path, tiny_model, variants=["base"], options={"die_after": 2}, launcher=stream)
    # The case in flight is an error; nothing was left to send, so no restart and the run is complete.
    fault = f"engine {FAKE!r} failed mid-run: RuntimeError: fake engine died"
    assert run.status == "complete" and run.provenance.engine_groups[0].faults == [fault]
    verdicts = sorted(c.verdict for c in run.cases)
    assert verdicts == ["error", "pass", "pass"]
    died = [c for c in run.cases if c.verdict == "error"][0]
    assert case_lines(died) == [f"batched: engine error (attempt 1): {fault} while this case was in flight"]
    assert read_results(tmp_path / "out").cases[0].verdict == "pass"  # written before the engine died
    # On the whole matrix, the cells computed before the death are kept and judged.
    matrix = fake_run(tmp_path, tiny_model, options={"die_after": 2})
    batched = sorted(c.variants["batched"].verdict for c in matrix.cases)
    assert batched == ["error", "pass", "pass"] and all(c.verdict == "error" for c in matrix.cases)


def test_variant_whose_output_never_arrives_is_an_error(tmp_path: Path, tiny_model: str) -> None:
    run = fake_run(tmp_path, tiny_model, variants=["alone-check"], files=[variants_file(tmp_path)],
                   options={"drop_variant": "alone-check"})
    case = run.case("text-only")
    assert case.verdict == "error" and case.variants["batched"].verdict == "pass"
    assert case_lines(case) == ["alone-check: engine process ended before returning this variant"]


def test_unavailable_metric_in_results_report_summary_and_gate(tmp_path: Path, tiny_model: str) -> None:
    run = fake_run(tmp_path, tiny_model, engine="tests.fake_engine:NoPromptLogprobsEngine")
    assert run.verdict == "pass"  # judged on what the engine supplies (outputs)
    data = json.loads((tmp_path / "out" / "results.json").read_text())
    cmp = data["cases"][0]["variants"]["batched"]["comparison"]
    assert cmp["prefill_max"] is None and cmp["prompt_ids_match"] is None
    assert cmp["unavailable"]["prefill_max"] == "the engine does not return prompt logprobs"
    assert cmp["first_divergence"] is None and cmp["decode_max"] == 0.0  # output metrics still computed
    html = publish(run, tmp_path / "out").html.read_text()
    assert 'title="the engine does not return prompt logprobs" data-value="">unavailable</td>' in html
    assert "| unavailable |" in markdown_summary(run)
    release = load_gate_config()["policies"]["release"]
    decision = decide(run, "release", {**release, "min_cases": 1})
    assert decision.code == UNDECIDED and "policy needs prefill_max, which is unavailable" in decision.reasons[0]
    bounded = decide(run, "x", {"metrics": {"prefill_max": 1e-4}})
    assert bounded.code == UNDECIDED and "policy bounds prefill_max, which is unavailable" in bounded.reasons[0]


def test_every_run_option_reaches_the_config_from_both_front_ends() -> None:
    """Each RunConfig field that is an option, given to `vlm-parity run` and to the pytest plugin's front end,
    arrives in the config changed from its default: a field a front end cannot set fails here."""
    from harness.cli import build_parser
    from harness.options import flag_of, options, run_config

    def sample(f, spec) -> str:
        kwargs = spec["argparse"]
        default = RunConfig.__dataclass_fields__[f.name].default
        if kwargs.get("choices"):
            return next(str(c) for c in kwargs["choices"] if c != default)
        return {"shard": "1/2", "engine_options": "a=1", "top_k": "7", "stall_s": "7.5", "engine_restarts": "7",
                "run_timeout_s": "7.5", "variants": "a,b"}.get(f.name, "/x/y")

    parser = build_parser()
    for front in ("cli", "pytest"):
        for f, spec in options(RunConfig, front):
            flag = [f"--{flag_of(f, spec)}"]
            args = parser.parse_args(["run", *flag] if spec["argparse"].get("action") == "store_true"
                                     else ["run", *flag, sample(f, spec)])
            cfg = run_config(lambda name: getattr(args, name), front=front)
            default = RunConfig.__dataclass_fields__[f.name]
            assert getattr(cfg, f.name) not in (None, [], {}, default.default), (front, f.name)
    pytest_fields = {f.name for f, _ in options(RunConfig, "pytest")}
    assert {f.name for f, _ in options(RunConfig, "cli")} - pytest_fields == {"only"}  # pytest selects with -k


def test_unknown_variant_or_engine_is_a_clear_run_error(tmp_path: Path, tiny_model: str, capsys) -> None:
    assert main(["run", "--engine", FAKE, "--reference-engine", FAKE, "--model", tiny_model,
                 "--variants", "no-such", "--out", str(tmp_path)]) == 2
    assert "unknown variant 'no-such'" in capsys.readouterr().err
    assert main(["run", "--engine", "nope:Nothing", "--model", tiny_model, "--out", str(tmp_path)]) == 2
    assert "engine 'nope:Nothing': cannot load nope:Nothing" in capsys.readouterr().err


def test_bad_variants_file_names_file_variant_and_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("variants:\n  x:\n    reason: because\n    request: {decodr: pil}\n")
    with pytest.raises(ValueError, match=r"bad.yaml: variant 'x': field 'request': unknown keys decodr"):
        load_variants([bad])
    bad.write_text("variants:\n  x:\n    against: [reference]\n")
    with pytest.raises(ValueError, match=r"variant 'x': field 'reason'"):
        load_variants([bad])


def test_version_1_results_still_render(tmp_path: Path) -> None:
    v1 = {"schema_version": 1, "status": "complete", "provenance": {"engine": "vllm"}, "cases": [{
        "case_id": "a", "verdict": "pass", "reasons": [], "comparison": {"prompt_ids_match": True,
                                                                         "prompt_len_reference": 3,
                                                                         "prompt_len_engine": 3, "prefill_max": 1e-6},
        "decode_effect": {"decoder": "simplejpeg-fastupsample", "verdict": "fail", "reasons": ["x"],
                          "comparison": {"prompt_ids_match": True, "prompt_len_reference": 3,
                                         "prompt_len_engine": 3, "prefill_max": 0.1}, "pixel_deltas": []}}]}
    run = RunResult.from_dict(v1)
    case = run.case("a")
    assert case.comparison.prefill_max == 1e-6
    assert case.variants["decoder-simplejpeg-fastupsample"].comparison.prefill_max == 0.1
    assert upgrade_v1(v1)["schema_version"] == 3
    (tmp_path / "results.json").write_text(json.dumps(v1))
    assert main(["report", str(tmp_path / "results.json")]) == 0


def test_shards_merged_equal_the_unsharded_run_and_a_missing_shard_is_named(tmp_path: Path, tiny_model: str) -> None:
    def run(shard: str | None, out: str) -> int:
        args = ["run", "--engine", FAKE, "--reference-engine", FAKE, "--model", tiny_model, "--out",
                str(tmp_path / out), "--engine-option", "drift=0.01", "--variants", "base"]
        return main(args + (["--shard", shard] if shard else []))

    assert run(None, "whole") == 1
    for i in (1, 2, 3):
        run(f"{i}/3", f"shard{i}")
    whole = read_results(tmp_path / "whole")
    shards = [read_results(tmp_path / f"shard{i}") for i in (1, 2, 3)]
    assert all(s.cases for s in shards) and sum(len(s.cases) for s in shards) == DEFAULT_CASES
    assert main(["merge", *(str(tmp_path / f"shard{i}") for i in (1, 2, 3)), "--out", str(tmp_path / "m")]) == 1
    merged = read_results(tmp_path / "m")
    summary = lambda r: {c.case_id: (c.verdict, c.comparison.prefill_max if c.comparison else None) for c in r.cases}
    assert summary(merged) == summary(whole) and merged.status == "complete"
    assert (tmp_path / "m" / "index.html").exists()
    with pytest.raises(ValueError, match=r"missing shard\(s\) 2/3"):
        merge_runs([tmp_path / "shard1", tmp_path / "shard3"])
    assert main(["merge", str(tmp_path / "shard1"), str(tmp_path / "shard3"), "--out", str(tmp_path / "m2")]) == 2
