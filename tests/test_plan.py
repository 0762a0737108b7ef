"""Run plan, variants, capabilities and the runner's orchestration, with the fake engine from tests/
(registered by string, no vLLM), run in-process (tests/inline.py) unless the worker protocol is the point."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.cli import main
from harness.core.notes import note_text
from harness.core.schema import RunResult
from harness.engines import resolve_engine
from harness.engines.base import Capabilities
from harness.engines.client import stream
from harness.judging.explain import case_lines
from harness.publish.gate import UNDECIDED, decide, load_gate_config
from harness.publish.merge import merge_runs
from harness.publish.report import publish
from harness.publish.report.summary import markdown_summary
from harness.publish.results import read_results
from harness.run.plan import base_features, engine_skip_reason
from harness.run.variants import Variant, load_variants
from harness.runner import RunConfig, execute
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
    # The base `engine:` feature the fake adapter lacks is said once, and its engine starts without it.
    assert run.provenance.engine_groups[0].features == {"prefix_caching": True}
    said = [n for n in run.notes if n.kind == "unsupported_base_features"]
    assert [n.data for n in said] == [{"engine": FAKE, "features": ["cache_block_tokens"]}]
    assert note_text(said[0]) == ("engine 'tests.fake_engine:FakeEngine' does not support the base engine feature "
                                  "cache_block_tokens (variants.yaml `engine:`): every variant runs with its own default")


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
    failed = by_id["two-images"]
    assert failed.verdict == "error" and [(n.kind, n.data) for n in failed.notes if n.level == "error"] == [
        ("reference_failed", {"type": None, "message": "fake failure"})]  # the engine's own message, as data
    assert case_lines(failed) == ["reference failed: fake failure"]
    assert by_id["text-only"].verdict == "pass" and by_id["astronaut-420"].verdict == "pass"
    assert run.status == "complete"


class FailingReference(resolve_engine(FAKE)):  # type: ignore[misc]
    """The fake engine as a reference that fails on one case."""

    def run(self, requests):
        for request in requests:
            if request.case_id == "two-images":
                from harness.core.schema import EngineOutput

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
    assert [(n.kind, n.data) for n in died.variants["batched"].notes] == [  # the client's words, not parsed
        ("engine_error", {"attempt": 0, "type": None, "message": f"{fault} while this case was in flight"})]
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
    assert cmp.get("prefill_max") is None and cmp.get("prompt_ids_match") is None  # a field at its default: left out
    assert cmp["unavailable"]["prefill_max"] == "the engine does not return prompt logprobs"
    assert cmp.get("first_divergence") is None and cmp["decode_max"] == 0.0  # output metrics still computed
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
    from harness.run.options import flag_of, options, run_config

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
    with pytest.raises(ValueError, match=r"bad.yaml: variant 'x': request: unknown field 'decodr' \(known: decoder, "):
        load_variants([bad])
    bad.write_text("variants:\n  x:\n    against: [reference]\n")
    with pytest.raises(ValueError, match=r"variant 'x': field 'reason'"):
        load_variants([bad])


@pytest.mark.parametrize(("text", "error"), [
    ("variants:\n  x:\n    reason: r\n    engine: {cuda_graph: true}\n",
     r"bad.yaml: variant 'x': engine: unknown feature 'cuda_graph' \(known: prefill_chunk_tokens, .*compiled"),
    ("engine: {prefix_cache: true}\n",
     r"bad.yaml: engine: unknown feature 'prefix_cache' \(known: prefill_chunk_tokens, "),
    ("variants:\n  x:\n    reason: r\n    engine: {prefill_chunk_tokens: lots}\n",
     r"bad.yaml: variant 'x': engine: prefill_chunk_tokens: 'lots' is not N \| auto"),
    ("variants:\n  x:\n    reason: r\n    request: {submit: alon}\n",
     r"bad.yaml: variant 'x': request: submit: 'alon' is not batched \| alone"),
    ("variants:\n  x:\n    reason: r\n    request: {videos: [a.png]}\n",
     r"bad.yaml: variant 'x': request: unknown field 'videos'"),  # the case's, not a variant's
])
def test_a_variants_file_outside_the_vocabulary_fails_at_load_naming_file_and_key(tmp_path: Path, text: str,
                                                                                  error: str) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    with pytest.raises(ValueError, match=error):
        load_variants([bad])


def test_a_base_feature_the_engine_lacks_is_dropped_and_named() -> None:
    capabilities = Capabilities(features=frozenset({"prefix_caching"}))
    features, missing = base_features({"prefix_caching": True, "cache_block_tokens": 32, "compiled": False},
                                      capabilities)
    assert features == {"prefix_caching": True} and missing == ["cache_block_tokens", "compiled"]
    assert base_features({"prefix_caching": True}, capabilities) == ({"prefix_caching": True}, [])


def test_a_variant_that_sets_a_declared_request_field_needs_an_engine_that_declares_it() -> None:
    variant = Variant("v", request={"warmup": "same-image", "prompt_logprobs": True, "submit": "alone"})
    assert engine_skip_reason(variant, Capabilities(), "e", "cpu") == "engine 'e' does not take per-request warmup"
    assert engine_skip_reason(variant, Capabilities(request_fields=frozenset({"warmup"})), "e", "cpu") is None
    assert engine_skip_reason(Variant("c", features={"compiled": True}), Capabilities(), "e", "cpu") == \
        "engine 'e' does not support compiled"


def test_results_of_another_schema_version_are_refused_with_what_to_do(tmp_path: Path) -> None:
    old = {"schema_version": 2, "status": "complete", "provenance": {"engine": "vllm"}, "cases": []}
    with pytest.raises(ValueError, match=r"schema_version 2: this vlm-parity reads version \d+ only; re-run"):
        RunResult.from_dict(old)
    (tmp_path / "results.json").write_text(json.dumps(old))
    assert main(["report", str(tmp_path / "results.json")]) != 0


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


def test_a_variant_compared_under_its_own_penalties_gets_a_reference_rerun_with_them() -> None:
    """`reference: {same: [penalties]}`: every case re-run by the reference with the variant's penalties (and each
    floor run of it), named after the variant; a reference engine that does not take the field skips the variant."""
    from dataclasses import replace

    from harness.engines.base import Penalties
    from harness.inputs.cases import load_cases
    from harness.run.plan import Side, reference_requests, reference_same, reference_skip_reason

    variant = load_variants().get("penalties")
    same = reference_same([variant])
    assert same == {"penalties": {"penalties": Penalties(1.5, 1.0, 1.5)}}
    cases = load_cases([CASES]).cases[:3]
    hf = resolve_engine("hf")
    requests = reference_requests(cases, {c.id: "p" for c in cases}, [], hf.capabilities,
                                  {"floor-bf16": {"dtype": "bfloat16"}}, same=same)
    reruns = [r for r in requests if r.variant == "reference-penalties"]
    assert [r.case_id for r in reruns] == [c.id for c in cases] and all(r.penalties == Penalties(1.5, 1.0, 1.5)
                                                                          for r in reruns)
    assert sum(r.variant == "floor-bf16|reference-penalties" for r in requests) == len(cases)
    side = Side("hf", hf, "m", "m", "float32", "cpu", hf.capabilities)
    assert reference_skip_reason(variant, side) is None
    lacking = replace(side, engine="other", capabilities=Capabilities())
    assert "does not take the request field(s) penalties" in reference_skip_reason(variant, lacking)


def test_sampled_answers_are_scored_by_the_reference_after_the_engines(tmp_path: Path, tiny_model: str) -> None:
    """The reference scores each sampled answer's tokens once the engines are done: the fake engine's made-up
    tokens are no draws from the model's distribution, so each of the `sampling` variant's two answers fails
    `sampled_allowed`, named after the logits; a reference that cannot score says so once, for the run."""
    from harness.judging.compare.returned import after_logits

    run = execute(RunConfig(cases=[CASES], out=tmp_path / "out", engine=FAKE, model=tiny_model,
                            variants=["base", "sampling"], only={"text-only"}), progress=lambda _: None,
                  launcher=inline)
    cell = run.case("text-only").variants["sampling"]
    drawn = [f for f in cell.failing if f.metric == "sampled_allowed"]
    assert [(f.against, f.attempt) for f in drawn] == [("scored", 0), ("scored", 1)], case_lines(run.case("text-only"))
    assert "could not have been drawn under temperature 0.8, top-k off, top-p 0.9" in drawn[0].detail
    assert not [n for n in cell.notes if n.kind == "not_scored"] and after_logits(drawn) == ["sampled_allowed"]
    unscored = fake_run(tmp_path / "fake", tiny_model, variants=["base", "sampling"], only={"text-only"})
    (said,) = [n for n in unscored.notes if n.kind == "sampled_not_scored"]
    assert note_text(said) == (f"the sampled answers of sampling are not scored by the reference (the reference "
                               f"engine '{FAKE}' cannot score another engine's tokens): they are judged on their "
                               "prompt logprobs and what they return only")
