"""The one-line diagnosis and the reference checks: pure functions over results."""
from __future__ import annotations

import random

from harness.compare.sensitivity import image_sensitivity
from harness.diagnosis import diagnose
from harness.schema import EngineOutput, Finding, TokenLogprobs, VariantResult
from tests.factories import synthetic_run


def fail_cell(run, case_id: str, variant: str, metric: str, against: str = "reference") -> None:
    """The cell fails on `metric` (a record, as the judge writes it)."""
    case = run.case(case_id)
    case.variants[variant] = VariantResult(variant, "fail", findings=[Finding(metric, "fail", against=against)])
    case.verdict = "fail"


def error_cell(run, case_id: str, variant: str, reason: str) -> None:
    case = run.case(case_id)
    case.variants[variant] = VariantResult(variant, "error", [reason])
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
    error_cell(run, "case-0003", "alone", "engine error (attempt 1): RuntimeError: boom")
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
