"""Comparators and verdicts on hand-made EngineOutputs (pure logic, no engine)."""
from __future__ import annotations

import math

import pytest

from harness import config
from harness.compare import compare_outputs, judge
from harness.compare.decode import compare_greedy
from harness.compare.prefill import first_id_mismatch, position_diffs, summarize, topk_jaccard
from harness.compare.text import rouge_l
from harness.schema import EngineOutput, TokenLogprobs

IMG = 9  # image placeholder token id in these fixtures


def tl(token: int, lp: float, top: list[int] | None = None) -> TokenLogprobs:
    top = top if top is not None else [token, 100, 101]
    return TokenLogprobs(token, lp, [(t, lp if t == token else lp - 1 - i) for i, t in enumerate(top)])


def output(prompt_ids: list[int], prompt_lps: list[float], out_ids: list[int], out_lps: list[float],
           text: str = "a cat") -> EngineOutput:
    return EngineOutput(
        case_id="c", engine="x", prompt_ids=prompt_ids,
        prompt_logprobs=[None] + [tl(t, lp) for t, lp in zip(prompt_ids[1:], prompt_lps)],
        output_ids=out_ids, output_logprobs=[tl(t, lp) for t, lp in zip(out_ids, out_lps)], output_text=text,
    )


F32 = config.resolve(config.load_config(), "float32")
BF16 = config.resolve(config.load_config(), "bfloat16")


def test_identical_outputs_pass_with_zero_diffs() -> None:
    ref = output([1, IMG, IMG, 5], [-1.0, -0.5, -2.0], [7, 8], [-0.1, -0.2])
    cmp = compare_outputs(ref, ref, IMG)
    assert cmp.prompt_ids_match and cmp.prefill_max == 0 and cmp.decode_max == 0
    assert cmp.rouge_l == 1.0 and cmp.first_divergence is None and cmp.decode_common_prefix == 2
    assert cmp.image_positions == 2 and cmp.prefill_topk_overlap == 1.0
    assert judge(cmp, F32) == ("pass", [])


def test_prefill_diff_split_by_image_and_text_positions() -> None:
    ref = output([1, IMG, IMG, 5], [-1.0, -0.5, -2.0], [7], [-0.1])
    eng = output([1, IMG, IMG, 5], [-1.0, -0.5 + 0.3, -2.0 + 0.01], [7], [-0.1])
    cmp = compare_outputs(ref, eng, IMG)
    assert cmp.prefill_max == pytest.approx(0.3)
    assert cmp.prefill_max_image == pytest.approx(0.3)  # position 2 is an image token
    assert cmp.prefill_max_text == pytest.approx(0.01)  # position 3 is text
    assert cmp.prefill_diffs[0] is None
    verdict, reasons = judge(cmp, F32)
    assert verdict == "fail" and any(r.startswith("prefill_max = 0.3 > 0.0001") for r in reasons)


def test_tokenization_mismatch_is_reported_as_such_not_as_logprob_diff() -> None:
    ref = output([1, 2, 3, 4], [-1.0, -1.0, -1.0], [7], [-0.1])
    eng = output([1, 2, 34], [-1.0, -5.0], [7], [-0.1])
    cmp = compare_outputs(ref, eng, IMG)
    assert cmp.prompt_ids_match is False
    assert cmp.prefill_max is None and cmp.prefill_diffs == [] and cmp.decode_max is None
    verdict, reasons = judge(cmp, F32)
    assert verdict == "fail" and len(reasons) == 1 and reasons[0].startswith("prompt_ids_match = false")


def test_diff_is_keyed_by_token_id() -> None:
    ref = [None, tl(5, -1.0)]
    eng_same_value_other_token = [None, TokenLogprobs(6, -1.0, [(6, -1.0), (5, -3.0)])]
    assert position_diffs(ref, eng_same_value_other_token) == [None, pytest.approx(2.0)]
    eng_missing = [None, TokenLogprobs(6, -1.0, [(6, -1.0)])]
    assert position_diffs(ref, eng_missing)[1] == math.inf


def test_greedy_divergence_and_topk_rule() -> None:
    # Step 2 diverges: reference picks 8 (engine ranks it 2nd), engine picks 9 (reference ranks it 2nd).
    ref_lps = [tl(7, -0.1), tl(7, -0.1), TokenLogprobs(8, -0.69, [(8, -0.69), (9, -0.70)])]
    eng_lps = [tl(7, -0.1), tl(7, -0.1), TokenLogprobs(9, -0.69, [(9, -0.69), (8, -0.70)])]
    g = compare_greedy([7, 7, 8], ref_lps, [7, 7, 9], eng_lps)
    assert g["first_divergence"] == 2 and g["decode_common_prefix"] == 2 and g["divergence_in_topk"] is True
    far = [tl(7, -0.1), tl(7, -0.1), TokenLogprobs(50, -0.2, [(50, -0.2), (51, -3.0)])]
    assert compare_greedy([7, 7, 8], ref_lps, [7, 7, 50], far)["divergence_in_topk"] is False


def test_near_tie_divergence_fails_float32_but_passes_bfloat16() -> None:
    ref = output([1, 2], [-1.0], [7, 8, 8], [-0.1, -0.69, -0.1], text="one two three")
    eng = output([1, 2], [-1.0], [7, 8, 8], [-0.1, -0.69, -0.1], text="one two three")
    ref.output_logprobs[1] = TokenLogprobs(8, -0.69, [(8, -0.69), (9, -0.70)])
    eng.output_ids[1] = 9
    eng.output_logprobs[1] = TokenLogprobs(9, -0.69, [(9, -0.69), (8, -0.70)])
    cmp = compare_outputs(ref, eng, IMG)
    assert cmp.first_divergence == 1 and cmp.divergence_in_topk
    assert judge(cmp, F32)[0] == "fail"
    assert judge(cmp, BF16) == ("pass", [])


def test_rouge_l_uses_rouge_score_and_exact_text() -> None:
    assert rouge_l("a red cat", "a red cat") == 1.0
    assert rouge_l("", "") == 1.0
    assert rouge_l("Cat!", "cat?") == 0.0
    assert rouge_l("a red cat sat", "a blue cat sat") == pytest.approx(0.75)


def test_summaries_and_helpers() -> None:
    s = summarize([None, 0.1, 0.2, 0.4], [False, True, False, True])
    assert s["prefill_max"] == 0.4 and s["prefill_max_image"] == 0.4 and s["prefill_max_text"] == 0.2
    assert s["prefill_mean"] == pytest.approx(0.7 / 3)
    assert summarize([None], [False])["prefill_max"] is None
    assert first_id_mismatch([1, 2, 3], [1, 2, 3]) is None
    assert first_id_mismatch([1, 2, 3], [1, 2]) == 2
    assert first_id_mismatch([1, 5, 3], [1, 2, 3]) == 1
    ref = [None, TokenLogprobs(1, -1.0, [(1, -1.0), (2, -2.0)])]
    eng = [None, TokenLogprobs(1, -1.0, [(1, -1.0), (3, -2.0)])]
    assert topk_jaccard(ref, eng) == pytest.approx(1 / 3)


def test_thresholds_resolve_with_reasons_and_overrides() -> None:
    cfg = config.load_config()
    assert config.effective_dtype("float32", "bfloat16") == "bfloat16"
    th = config.resolve(cfg, "float32", case_overrides={"prefill_max": 0.5})
    assert th["prefill_max"] == 0.5 and th.reasons["prefill_max"] == "set by the case"
    assert "1.4e-6" in config.resolve(cfg, "float32").reasons["prefill_max"]
    cfg["models"] = {"*/big-*": {"float32": {"prefill_max": {"value": 1e-3, "reason": "fp32 accumulation"}}}}
    assert config.resolve(cfg, "float32", model="/m/big-7b")["prefill_max"] == 1e-3
    with pytest.raises(ValueError, match="unknown threshold 'prefil_max'"):
        config.resolve(cfg, "float32", case_overrides={"prefil_max": 1.0})
    for dtype in cfg["dtypes"].values():
        assert all(spec["reason"] for spec in dtype.values())


def test_nan_and_missing_logprobs_fail() -> None:
    ref = output([1, 2, 3], [-1.0, -1.0], [7, 8], [-0.1, -0.2])
    nan = output([1, 2, 3], [-1.0, float("nan")], [7, 8], [-0.1, -0.2])
    verdict, reasons = judge(compare_outputs(ref, nan, IMG), F32)
    assert verdict == "fail" and any(r.startswith("prefill_max = nan") for r in reasons)
    truncated = output([1, 2, 3], [-1.0, -1.0], [7, 8], [-0.1, -0.2])
    truncated.prompt_logprobs = truncated.prompt_logprobs[:2]
    truncated.output_logprobs = truncated.output_logprobs[:1]
    cmp = compare_outputs(ref, truncated, IMG)
    verdict, reasons = judge(cmp, F32)
    assert verdict == "fail"
    assert "incomplete output: engine scored 1 of 2 prompt positions" in reasons
    assert "incomplete output: engine returned 1 logprobs for 2 output tokens" in reasons
