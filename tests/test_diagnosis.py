"""The one-line diagnosis, the reference checks, notes and known failures: pure functions over results."""
from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from harness.core.notes import NOTES, error_fields, note, note_text
from harness.core.schema import EngineOutput, Finding, RunResult, TokenLogprobs, VariantResult
from harness.inputs.cases import Case
from harness.judging.compare.sensitivity import image_sensitivity
from harness.judging.diagnosis import diagnose
from harness.judging.explain import case_lines, run_lines, variant_lines, warning_lines
from harness.run.known import load_known, mark_known
from tests.factories import synthetic_run


def fail_cell(run, case_id: str, variant: str, metric: str, against: str = "reference") -> None:
    """The cell fails on `metric` (a record, as the judge writes it)."""
    case = run.case(case_id)
    case.variants[variant] = VariantResult(variant, "fail", findings=[Finding(metric, "fail", against=against)])
    case.verdict = "fail"


def error_cell(run, case_id: str, variant: str, error: str) -> None:
    """The cell errors with the engine's `error` on its first attempt (a record, as the judge writes it)."""
    case = run.case(case_id)
    case.variants[variant] = VariantResult(variant, "error", notes=[
        note("engine_error", attempt=0, **error_fields(error))])
    case.verdict = "error"


def clean_run(n: int = 6):
    run = synthetic_run(n, fail_every=10**6, error_every=10**6)
    run.case("case-0000").images = []  # a text-only case
    return run


def test_nothing_failed_says_so() -> None:
    assert diagnose(clean_run()) == ["no failures: every variant that ran (2) passes on every case"]


def test_only_one_variant_fails_names_its_symptom() -> None:
    run = clean_run()
    run.variants[1]["diagnosis"] = "fails only when submitted alone"
    for case_id in ("case-0001", "case-0002"):
        fail_cell(run, case_id, "alone", "prefill_max", against="base")
    assert diagnose(run)[0] == "fails only when submitted alone: 2 case(s), every other variant passes on them"


def test_errors_only_on_one_variant_say_engine_errors() -> None:
    run = clean_run()
    error_cell(run, "case-0003", "alone", "RuntimeError: boom")
    assert "(engine errors)" in diagnose(run)[0]


def test_image_cases_fail_text_passes_and_decode_only() -> None:
    run = clean_run()
    for case_id in ("case-0001", "case-0002", "case-0003"):
        fail_cell(run, case_id, "batched", "first_divergence")
        fail_cell(run, case_id, "alone", "rouge_l")
    found = diagnose(run)
    assert found[0].startswith("image cases fail (3/5), text-only cases pass")
    assert found[1].startswith("prefill passes, decode fails")


def test_prompt_ids_pattern() -> None:
    run = clean_run()
    for case in run.cases:
        for variant in ("batched", "alone"):
            fail_cell(run, case.case_id, variant, "prompt_ids_match")
    assert diagnose(run) == ["prompt token ids differ: the tokenizer or the chat template"]


def _out(prompt: list[int], lps: list[float], out: list[int]) -> EngineOutput:
    return EngineOutput("c", "hf", prompt_ids=prompt,
                        prompt_logprobs=[None] + [TokenLogprobs(t, lp) for t, lp in zip(prompt[1:], lps)],
                        output_ids=out)


def test_image_sensitivity_looks_after_the_image_only() -> None:
    prompt = [1, 6, 6, 6, 9, 10, 11]
    rng = random.Random(0)
    lps = [-rng.random() for _ in prompt[1:]]
    moved_inside = [lp - 2.0 if i < 3 else lp for i, lp in enumerate(lps)]  # only image positions move
    blind = image_sensitivity(_out(prompt, lps, [5, 5]), _out(prompt, moved_inside, [5, 5]), 6)
    assert blind == {"after_image_max": 0.0, "output_changed": False}
    moved_after = [lp - 0.5 if i == 4 else lp for i, lp in enumerate(lps)]
    seeing = image_sensitivity(_out(prompt, lps, [5, 5]), _out(prompt, moved_after, [5, 7]), 6)
    assert seeing["output_changed"] and abs(seeing["after_image_max"] - 0.5) < 1e-9


def test_an_unknown_note_kind_cannot_be_made_nor_one_short_of_its_values() -> None:
    with pytest.raises(ValueError, match=r"unknown note kind 'stale_referenc' \(declared in harness/core/notes.py"):
        note("stale_referenc", state="stale")
    with pytest.raises(KeyError, match="reason"):
        note("no_floor")  # its text needs the reason: refused where it is made, not when a report renders it
    made = note("no_floor", reason="the reference engine cannot recompute")
    assert made.level == NOTES["no_floor"].level == "warning"
    assert note_text(made) == ("no floors: the reference engine cannot recompute; every metric is judged by its "
                               "absolute ceiling alone")


def test_an_engine_error_keeps_its_exception_type_and_message_as_data() -> None:
    found = note("engine_error", attempt=1, **error_fields("ValueError: vLLM returned 3 logprobs: for 4 tokens"))
    assert found.data == {"attempt": 1, "type": "ValueError", "message": "vLLM returned 3 logprobs: for 4 tokens"}
    assert note_text(found) == "engine error (attempt 2): ValueError: vLLM returned 3 logprobs: for 4 tokens"
    stalled = error_fields("vllm sent nothing for 5 s (stalled) and was stopped while this case was in flight")
    assert stalled["type"] is None  # no exception's name leads it: all of it is the message
    http = error_fields("HTTP 500 from /v1/chat/completions: Internal: boom")
    assert http == {"type": None, "message": "HTTP 500 from /v1/chat/completions: Internal: boom"}


def test_notes_round_trip_through_results_json_and_render_where_shown() -> None:
    run = synthetic_run(2, fail_every=10**6, error_every=10**6)
    case = run.cases[0]
    run.notes.append(note("chunking_split_nothing", variant="chunked", chunk_tokens=16))
    case.notes.append(note("stale_reference", state="stale", file="a.json", changes=["image bytes of images[0]"]))
    case.variants["alone"].notes.append(note("cache_not_hit"))
    case.variants["batched"] = VariantResult("batched", "error", notes=[
        note("engine_failed", **error_fields("engine process died (SIGKILL)"))])
    again = RunResult.from_dict(json.loads(json.dumps(run.to_dict())))
    assert again == run
    assert run_lines(again) == ["variant chunked: prefill chunks of 16 tokens split no image span: the variant "
                                "does not exercise its path on these cases"]
    assert warning_lines(again.cases[0]) == [
        "stored reference stale (a.json): changed: image bytes of images[0]: the reference ran live",
        "alone: no prompt token came from the engine's prefix cache: the path was not exercised on this case"]
    assert case_lines(again.cases[0]) == ["batched: engine failed: engine process died (SIGKILL)"]


def known(errors: str) -> str:
    """known_failures.yaml with one entry for reject-then-reuse whose `errors` field is `errors`."""
    return ('known_failures:\n  - {model: "*", engine: vllm, cases: "*", variants: [reject-then-reuse], '
            f"metrics: [], reason: cache drift, errors: {errors}}}\n")


PATTERNS = r"[{type: MultiModalCacheMissError}, {message: 'cache drift \(P0/P1\)'}]"


def _errored(*notes) -> VariantResult:
    return VariantResult("reject-then-reuse", "error", notes=list(notes))


def test_known_failures_match_engine_error_records_on_type_and_message() -> None:
    (entry,) = load_known("m", "m", "vllm", "0.32.0", "cpu", known(PATTERNS))
    case = Case("c", Path("cases.yaml"), (), (), 8, (), {})
    by_type = _errored(note("engine_error", attempt=0, **error_fields("MultiModalCacheMissError: hashes [1]")))
    by_message = _errored(note("engine_failed", type="RuntimeError", message="worker: cache drift (P0/P1) in core"))
    for cell in (by_type, by_message):
        assert mark_known(case, cell, [entry]).verdict == "known"
        assert (cell.notes[0].kind, cell.notes[0].data["reason"]) == ("known_failure", "cache drift")
        assert variant_lines(cell)[0] == "known failure: cache drift"
    # Another exception, one error of two unmatched, or a harness error naming the type: not this bug.
    other = _errored(note("engine_error", attempt=0, **error_fields("ValueError: MultiModalCacheMiss")))
    half = _errored(note("engine_error", attempt=0, type="MultiModalCacheMissError", message=""), note("engine_ended"))
    harness = _errored(note("harness_error", type="MultiModalCacheMissError", message="cache drift (P0/P1)"))
    for cell in (other, half, harness):
        assert mark_known(case, cell, [entry]).verdict == "error" and cell.notes[0].kind != "known_failure"


def test_the_packaged_reject_then_reuse_entry_covers_the_cache_miss_raised_or_wrapped() -> None:
    case = Case("c", Path("cases.yaml"), (), (), 8, (), {})
    entries = load_known("tiny-qwen2-vl", "/models/tiny", "vllm", "0.32.0", "cpu")
    raised = _errored(note("engine_error", attempt=0, **error_fields("MultiModalCacheMissError: P0/P1 cache drift")))
    wrapped = _errored(note("engine_error", attempt=0, **error_fields("RuntimeError: MultiModalCacheMissError(...)")))
    for cell in (raised, wrapped):
        assert mark_known(case, cell, entries).verdict == "known", variant_lines(cell)
    crashed = _errored(note("engine_error", attempt=0, **error_fields("RuntimeError: CUDA error")))
    assert mark_known(case, crashed, entries).verdict == "error"


def test_a_known_failure_error_entry_must_be_a_record_pattern() -> None:
    with pytest.raises(ValueError, match=r"known_failures.yaml: entry 'cache drift': field 'errors\[0\]': expected"):
        load_known("m", "m", "vllm", "0.32.0", "cpu", known("[MultiModalCacheMissError]"))  # a bare substring
    with pytest.raises(ValueError, match=r"field 'errors\[0\]': field 'message': not a regular expression"):
        load_known("m", "m", "vllm", "0.32.0", "cpu", known("[{message: '('}]"))


def test_a_record_that_applies_to_a_passing_cell_says_it_no_longer_matches() -> None:
    """pytest's strict XPASS, in the results: the cell stays `pass`, with a warning naming the record; a record
    of engine errors says nothing of a cell that passed (its condition is the error, not the case)."""
    metrics = ('known_failures:\n  - {model: "*", engine: vllm, cases: "*", variants: [alone], '
               "metrics: [prefill_max], reason: batch drift}\n")
    (by_metrics,) = load_known("m", "m", "vllm", "0.32.0", "cpu", metrics)
    (by_errors,) = load_known("m", "m", "vllm", "0.32.0", "cpu", known(PATTERNS))
    case = Case("c", Path("cases.yaml"), (), (), 8, (), {})
    passed = mark_known(case, VariantResult("alone", "pass"), [by_metrics, by_errors])
    assert passed.verdict == "pass" and [n.kind for n in passed.notes] == ["known_unmatched"]
    assert "did not show: the engine may be fixed" in note_text(passed.notes[0])
    assert mark_known(case, VariantResult("reject-then-reuse", "pass"), [by_metrics, by_errors]).notes == []
    assert mark_known(case, VariantResult("batched", "pass"), [by_metrics]).notes == []  # no record applies


def test_in_pytest_a_record_of_metrics_is_a_strict_expected_failure_and_one_of_errors_is_not() -> None:
    """A fixed engine XPASSes (and fails the suite) on a record of failing metrics; a record of engine errors has
    the error as its condition, which a passing request did not meet: no XPASS failure for it."""
    from harness.pytest_plugin import _known

    metrics = ('known_failures:\n  - {model: "*", engine: vllm, cases: "*", variants: [alone], '
               "metrics: [prefill_max], reason: batch drift}\n")
    (by_metrics,) = load_known("m", "m", "vllm", "0.32.0", "cpu", metrics)
    (by_errors,) = load_known("m", "m", "vllm", "0.32.0", "cpu", known(PATTERNS))
    case = Case("c", Path("cases.yaml"), (), (), 8, (), {})
    (strict,) = _known([by_metrics], case, "alone")
    (lenient,) = _known([by_errors], case, "reject-then-reuse")
    assert strict.kwargs["strict"] is True and lenient.kwargs["strict"] is False
    assert _known([by_metrics], case, "batched") == []


def test_a_record_that_shows_only_sometimes_is_no_strict_expected_failure() -> None:
    """`sometimes: true` (the packaged vLLM server top_logprobs record: only where a token other than the most
    likely is chosen): a failing cell on its metrics is known; a passing one says nothing, in results and in
    pytest."""
    from harness.pytest_plugin import _known

    case = Case("c", Path("cases.yaml"), (), (), 8, (), {})
    (entry,) = load_known("m", "m", "vllm-server", "0.32.0", "cpu")
    assert entry.sometimes and not entry.strict and entry.metrics == ("logprob_ranks",)
    assert mark_known(case, VariantResult("logit-bias", "pass"), [entry]).notes == []
    (mark,) = _known([entry], case, "logit-bias")
    assert mark.kwargs["strict"] is False
    ranks = VariantResult("logit-bias", "fail", findings=[Finding("logprob_ranks", "fail")])
    assert mark_known(case, ranks, [entry]).verdict == "known"
    both = VariantResult("logit-bias", "fail", findings=[Finding("logprob_ranks", "fail"),
                                                         Finding("first_divergence", "fail")])
    assert mark_known(case, both, [entry]).verdict == "fail"
