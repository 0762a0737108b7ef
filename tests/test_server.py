"""The vLLM OpenAI-compatible server adapter against a real vLLM CPU server on 127.0.0.1."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from harness.judging.explain import case_lines, variant_lines
from harness.publish.gate import UNDECIDED, decide, load_gate_config
from harness.publish.report import publish
from harness.runner import RunConfig, execute
from harness.publish.positions import loaded
from tests.conftest import CASES, DEFAULT_CASES, VIDEO_CASES
from tests.servers import PROXY_MODULE

pytestmark = pytest.mark.engine


def stand_ins() -> list[str]:
    """Command lines of the stand-in servers (tests/servers.py) running on this machine."""
    out = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if f"-m {PROXY_MODULE} " in line]


def test_server_started_and_stopped_by_the_harness_passes_every_default_case(tmp_path: Path, tiny_model: str,
                                                                             vllm_server: tuple) -> None:
    """The harness starts the server on 127.0.0.1, waits for its health, runs every default case through it
    against the stored references (as the offline engine does in the parity run) and stops it. The server it
    starts is a stand-in that forwards to the session's vLLM server (tests/servers.py): the answers are vLLM's,
    and the session pays one vLLM server start."""
    before = stand_ins()
    server = execute(RunConfig(cases=[CASES], model=tiny_model, variants=["base"], out=tmp_path / "server",
                               engine="tests.servers:ProxiedVLLMServer", engine_options={"upstream": vllm_server[1]},
                               localize="off"), progress=lambda _: None)
    assert server.provenance.engine_info["started_server"] is True
    assert stand_ins() == before, "the harness left its server running"
    assert server.status == "complete" and len(server.cases) == DEFAULT_CASES
    assert server.verdict == "pass", [(c.case_id, case_lines(c)) for c in server.cases if c.verdict != "pass"]
    skipped = {c.case_id: c.variants["batched"].reasons for c in server.cases if c.verdict == "skipped"}
    assert set(skipped) == VIDEO_CASES and all("does not take video" in r[0] for r in skipped.values()), skipped
    for case in (c for c in server.cases if c.verdict != "skipped"):  # the whole prompt scored, ids equal
        cmp = case.comparison
        assert cmp.prompt_ids_match and cmp.prefill_max is not None and not cmp.missing, case.case_id
        assert cmp.first_divergence is None, case.case_id


def test_engine_url_attaches_and_never_stops_the_server(tmp_path: Path, tiny_model: str, vllm_server: tuple) -> None:
    proc, url = vllm_server  # the session's server (tests/conftest.py)
    only = {"astronaut-420", "two-images", "text-only"}
    run = execute(RunConfig(cases=[CASES], out=tmp_path / "out", model=tiny_model, engine="vllm-server",
                            engine_url=url, variants=["base", "native"], only=only), progress=lambda _: None)
    assert run.verdict == "pass", [(c.case_id, case_lines(c)) for c in run.cases]
    assert run.provenance.engine_info["started_server"] is False
    assert proc.poll() is None, "the harness stopped a server it did not start"
    run = loaded(run, tmp_path / "out")  # with its per-position data
    native = {c.case_id: c.variants["native"].engine.prompt_ids for c in run.cases}
    assert native == {c.case_id: c.engine.prompt_ids for c in run.cases}  # same template, same ids
    # The same server through the generic OpenAI adapter: output text only, the rest unavailable.
    generic = execute(RunConfig(cases=[CASES], out=tmp_path / "generic", model=tiny_model, engine="openai",
                                engine_url=url, variants=["base", "native"], only=only), progress=lambda _: None)
    assert generic.skipped == {"batched": "engine 'openai' does not accept the 'rendered' prompt form"}
    for case in generic.cases:
        cell = case.variants["native"]
        assert cell.verdict == "pass", (case.case_id, variant_lines(cell))
        assert cell.comparison.prefill_max is None and cell.comparison.first_divergence is None
        assert cell.comparison.unavailable["prefill_max"] == "the engine does not return prompt logprobs"
        assert cell.comparison.unavailable["decode_max"] == "the engine does not return output logprobs"
        assert cell.comparison.rouge_l == 1.0  # what a text-only API can show: the same greedy text
    release = load_gate_config()["policies"]["release"]
    decision = decide(generic, "release", {**release, "min_cases": 1})
    assert decision.code == UNDECIDED and "policy needs prefill_max, which is unavailable" in decision.reasons[0]
    assert "unavailable</td>" in publish(generic, tmp_path / "generic").html.read_text()


def test_the_output_side_variants_through_the_server(tmp_path: Path, tiny_model: str, vllm_server: tuple) -> None:
    """n answers, stop rules and detokenization options as the OpenAI API takes them (vLLM's extra fields):
    every answer held to the reference, the text to the reference tokenizer's decode, the finish reason to the
    stop rules."""
    _, url = vllm_server
    only = {"astronaut-420", "two-images", "text-only"}
    run = execute(RunConfig(cases=[CASES], out=tmp_path / "out", model=tiny_model, engine="vllm-server",
                            engine_url=url, variants=["base", "n-best", "stops", "special-tokens"], only=only,
                            localize="off"), progress=lambda _: None)
    assert run.skipped == {} and run.verdict == "pass", [(c.case_id, case_lines(c)) for c in run.cases]
    for case in loaded(run, tmp_path / "out").cases:
        assert len(case.variants["n-best"].engine.completions) == 2
        assert case.variants["stops"].engine.finish_reason in ("stop", "length")
        assert "<|im_end|>" in case.variants["special-tokens"].engine.output_text


def test_a_logit_bias_and_a_choice_through_the_server_and_the_top_logprobs_bug_on_record(
        tmp_path: Path, tiny_model: str, vllm_server: tuple) -> None:
    """A bias by text sent as the model's token ids, a choice as vLLM's `structured_outputs`: the constrained
    answers equal the reference's under the same constraint. Where the bias makes the server choose a token that
    is not the most likely, its top_logprobs start with that token (vLLM's chat API, on record with its
    reproduction): those cells are known on `logprob_ranks` alone, never failed; the others pass."""
    _, url = vllm_server
    only = {"astronaut-420", "two-images", "text-only"}
    run = execute(RunConfig(cases=[CASES], out=tmp_path / "out", model=tiny_model, engine="vllm-server",
                            engine_url=url, variants=["base", "logit-bias", "structured-choice"], only=only,
                            localize="off"), progress=lambda _: None)
    assert run.skipped == {}, run.skipped
    for case in loaded(run, tmp_path / "out").cases:
        assert case.variants["structured-choice"].verdict == "pass", case_lines(case)
        assert case.variants["structured-choice"].engine.finish_reason == "stop"
        biased = case.variants["logit-bias"]
        assert biased.verdict in ("pass", "known"), case_lines(case)
        if biased.verdict == "known":
            assert {f.metric for f in biased.failing} == {"logprob_ranks"}
            assert "repro/vllm_server_top_logprobs_sampled_first.py" in case_lines(case)[0] + str(biased.notes)
    assert any(c.variants["logit-bias"].verdict == "known" for c in run.cases)
