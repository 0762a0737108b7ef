"""Comparators and verdicts on hand-made EngineOutputs (pure logic, no engine)."""
from __future__ import annotations

import math

import pytest

from harness import config
from harness.core.schema import CaseComparison, EngineOutput, Floor, TokenLogprobs, judged_by
from harness.engines.base import Capabilities
from harness.inputs.cases import Case
from harness.judging.compare import compare_outputs, judge
from harness.judging.compare.decode import compare_greedy
from harness.judging.compare.distribution import distribution_stats, position_kl
from harness.judging.compare.floor import case_floors, floor_key, measure_floor
from harness.judging.compare.prefill import first_id_mismatch, position_diffs, summarize, topk_jaccard
from harness.judging.compare.text import rouge_l
from harness.judging.compare.verdict import check_metric, floor_of
from harness.judging.explain import finding_text
from harness.judging.judge import _floor_of
from harness.run.plan import OPTIONS, floor_runs, reference_requests
from harness.run.variants import Variant
from tests.conftest import CASES

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


def verdict(cmp: CaseComparison, th: config.Thresholds, floor: Floor | None = None) -> tuple[str, list[str]]:
    """The verdict and the failure lines of one comparison, as the CLI renders them."""
    found = [f for f in judge(cmp, th, floor) if f.level == "fail"]
    return ("fail" if found else "pass"), [finding_text(f).removeprefix("vs reference: ") for f in found]


def test_identical_outputs_pass_with_zero_diffs() -> None:
    ref = output([1, IMG, IMG, 5], [-1.0, -0.5, -2.0], [7, 8], [-0.1, -0.2])
    cmp = compare_outputs(ref, ref, IMG)
    assert cmp.prompt_ids_match and cmp.prefill_max == 0 and cmp.decode_max == 0
    assert cmp.rouge_l == 1.0 and cmp.first_divergence is None and cmp.decode_common_prefix == 2
    assert cmp.image_positions == 2 and cmp.prefill_topk_overlap == 1.0
    assert verdict(cmp, F32) == ("pass", [])
    assert set(cmp.checks) >= {"prefill_max", "prefill_mean", "kl_mean", "same_top1", "decode_max", "rouge_l"}
    assert all(c.level == "pass" for c in cmp.checks.values())


def test_prefill_diff_split_by_image_and_text_positions() -> None:
    ref = output([1, IMG, IMG, 5], [-1.0, -0.5, -2.0], [7], [-0.1])
    eng = output([1, IMG, IMG, 5], [-1.0, -0.5 + 0.3, -2.0 + 0.01], [7], [-0.1])
    cmp = compare_outputs(ref, eng, IMG)
    assert cmp.prefill_max == pytest.approx(0.3)
    assert cmp.prefill_max_image == pytest.approx(0.3)  # position 2 is an image token
    assert cmp.prefill_max_text == pytest.approx(0.01)  # position 3 is text
    assert cmp.prefill_diffs[0] is None
    result, reasons = verdict(cmp, F32)
    assert result == "fail" and any(r.startswith("prefill_max = 0.3 > 0.0001 (ceiling; no floor)") for r in reasons)


def test_tokenization_mismatch_is_reported_as_such_not_as_logprob_diff() -> None:
    ref = output([1, 2, 3, 4], [-1.0, -1.0, -1.0], [7], [-0.1])
    eng = output([1, 2, 34], [-1.0, -5.0], [7], [-0.1])
    cmp = compare_outputs(ref, eng, IMG)
    assert cmp.prompt_ids_match is False
    assert cmp.prefill_max is None and cmp.prefill_diffs == [] and cmp.decode_max is None
    result, reasons = verdict(cmp, F32)
    assert result == "fail" and len(reasons) == 1 and reasons[0].startswith("prompt_ids_match = false")


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
    assert verdict(cmp, F32)[0] == "fail"
    assert verdict(cmp, BF16) == ("pass", [])


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
    for dtype in cfg["dtypes"]:  # every metric of the floor rule has its bound and its rounding floor
        values = config.resolve(cfg, dtype).values
        judged = judged_by("floor")
        assert judged and all(config.ceiling_key(m) in values and f"{m}_atol" in values for m in judged), dtype
        assert values["k"] > values["k_warn"] > 1
    cfg["models"] = {"*/big-*": {"float32": {"prefill_max": {"value": 1e-3, "reason": "fp32 accumulation"}}}}
    assert config.resolve(cfg, "float32", model="/m/big-7b")["prefill_max"] == 1e-3
    with pytest.raises(ValueError, match="unknown metric 'prefil_max'"):
        config.resolve(cfg, "float32", case_overrides={"prefil_max": 1.0})
    for dtype in cfg["dtypes"].values():
        assert all(spec["reason"] for spec in dtype.values())


def test_nan_and_missing_logprobs_fail() -> None:
    ref = output([1, 2, 3], [-1.0, -1.0], [7, 8], [-0.1, -0.2])
    nan = output([1, 2, 3], [-1.0, float("nan")], [7, 8], [-0.1, -0.2])
    result, reasons = verdict(compare_outputs(ref, nan, IMG), F32)
    assert result == "fail" and any(r.startswith("prefill_max = nan") for r in reasons)
    truncated = output([1, 2, 3], [-1.0, -1.0], [7, 8], [-0.1, -0.2])
    truncated.prompt_logprobs = truncated.prompt_logprobs[:2]
    truncated.output_logprobs = truncated.output_logprobs[:1]
    cmp = compare_outputs(ref, truncated, IMG)
    result, reasons = verdict(cmp, F32)
    assert result == "fail"
    assert "incomplete: engine scored 1 of 2 prompt positions" in reasons
    assert "incomplete: engine returned 1 logprobs for 2 output tokens" in reasons


def floor(**metrics: float) -> Floor:
    return Floor({"floor-float64": {"dtype": "float64"}}, metrics)


def test_floor_rule_passes_drifts_and_fails_relative_to_the_case_floor() -> None:
    """error <= k * floor + atol; between k_warn and k a drift; the ceiling caps the bound."""
    k, k_warn, atol = F32["k"], F32["k_warn"], F32["prefill_max_atol"]
    f = 4e-6
    ok = check_metric("prefill_max", 2 * f, F32, f)
    assert (ok.level, ok.rule, ok.ratio) == ("pass", "floor", pytest.approx(2.0))
    assert ok.bound == pytest.approx(k * f + atol) and ok.k == k
    drift = check_metric("prefill_max", (k_warn + 1) * f + atol, F32, f)
    assert drift.level == "drift" and drift.ratio > k_warn
    bad = check_metric("prefill_max", (k + 1) * f + atol, F32, f)
    assert bad.level == "fail" and "x floor + atol" in finding_text(bad)
    # The same value is fine for a case whose floor is 4x larger: the bound follows the case.
    assert check_metric("prefill_max", (k + 1) * f + atol, F32, 4 * f).level == "pass"
    # Under today's fixed 1e-4 bound but 27x its own floor: no longer silent.
    assert check_metric("prefill_max", 8e-5, F32, 3e-6).level == "fail"
    # A huge floor cannot lift the bound past the ceiling; no floor means the ceiling alone.
    capped = check_metric("prefill_max", 5e-4, F32, 1e-3)
    assert (capped.level, capped.rule, capped.bound) == ("fail", "ceiling", F32["prefill_max"])
    alone = check_metric("prefill_max", 5e-5, F32, None)
    assert (alone.level, alone.rule, alone.ratio) == ("pass", "ceiling", None)
    assert check_metric("prefill_max", float("nan"), F32, f).level == "fail"


def test_higher_is_better_and_second_order_metrics() -> None:
    """An agreement share is judged by its shortfall from 1; KL (second order) by k squared."""
    share = check_metric("same_top1", 0.95, BF16, 0.98)  # shortfall 0.05 vs the floor's 0.02
    assert share.ratio == pytest.approx(2.5) and share.level == "pass"
    assert share.bound == pytest.approx(1 - (BF16["k"] * 0.02 + BF16["same_top1_atol"]))
    assert check_metric("same_top1", 0.95, BF16, 0.9).bound == BF16["same_top1_min"]  # the ceiling caps it
    assert check_metric("same_top1", 0.3, BF16, 0.95).level == "fail"
    kl = check_metric("kl_mean", 1.2e-3, BF16, 1e-4)  # 12x the floor: under k^2 = 16, over k_warn^2 = 9
    assert kl.level == "drift" and kl.bound == pytest.approx(BF16["k"] ** 2 * 1e-4 + BF16["kl_mean_atol"])
    assert check_metric("prefill_max_image", 9.0, F32, 1e-6).level == "pass"  # informative: never fails
    assert check_metric("prefill_max_image", 9.0, F32, 1e-6).rule == "info"


def test_decode_floor_is_pooled_with_the_prompts() -> None:
    """16 greedy steps are a noisy floor: decode_max takes the prompt's when that is larger."""
    assert floor_of(floor(decode_max=1e-7, prefill_max=5e-6), "decode_max") == 5e-6
    assert floor_of(floor(decode_max=9e-6, prefill_max=5e-6), "decode_max") == 9e-6
    assert floor_of(floor(prefill_max=5e-6), "prefill_mean") is None
    assert floor_of(Floor(unavailable="no reference"), "prefill_max") is None


def test_kl_and_top1_from_topk_with_a_rest_bucket() -> None:
    same = TokenLogprobs(1, -0.2, [(1, -0.2), (2, -2.0), (3, -3.0)])
    assert position_kl(same, same) == pytest.approx(0.0, abs=1e-12)
    shifted = TokenLogprobs(1, -0.3, [(1, -0.3), (2, -1.8), (3, -3.0)])
    assert position_kl(same, shifted) > 1e-3
    # A token of the reference's top-k the engine did not return takes the engine's k-th logprob (an upper bound).
    missing = TokenLogprobs(1, -0.2, [(1, -0.2), (2, -2.0), (4, -3.5)])
    assert 0 < position_kl(same, missing) < position_kl(same, TokenLogprobs(1, -0.2, [(1, -0.2), (2, -2.0), (4, -9)]))
    flipped = TokenLogprobs(1, -0.9, [(2, -0.6), (1, -0.9), (3, -3.0)])
    stats = distribution_stats([None, same, same, same], [None, same, flipped, same])
    assert stats["same_top1"] == pytest.approx(2 / 3) and stats["same_top1_se"] == pytest.approx(
        math.sqrt((2 / 3) * (1 / 3) / 2))
    assert stats["kl_max"] == pytest.approx(position_kl(same, flipped)) and stats["kl_mean"] > 0
    assert stats["delta_p_max"] == pytest.approx(math.exp(-0.2) - math.exp(-0.9))


def test_measure_floor_takes_the_worst_run_per_metric_and_position() -> None:
    ref = output([1, IMG, 5, 6], [-1.0, -0.5, -2.0], [7, 8], [-0.1, -0.2])
    a = output([1, IMG, 5, 6], [-1.0 + 1e-6, -0.5, -2.0], [7, 8], [-0.1, -0.2])
    b = output([1, IMG, 5, 6], [-1.0, -0.5, -2.0 + 3e-6], [7, 8], [-0.1, -0.2 + 2e-6])
    runs = {"floor-float64": {"dtype": "float64"}, "floor-float32-eager": {"attn_implementation": "eager"}}
    found = measure_floor(ref, {"floor-float64": a, "floor-float32-eager": b}, runs, IMG)
    assert found.metrics["prefill_max"] == pytest.approx(3e-6) and found.metrics["decode_max"] == pytest.approx(2e-6)
    assert found.diffs == [None, pytest.approx(1e-6), 0.0, pytest.approx(3e-6)]
    assert found.runs == runs and not found.unavailable
    broken = measure_floor(ref, {"floor-float64": EngineOutput.failed("c", "hf", "OOM")}, runs, IMG)
    assert broken.unavailable and "OOM" in broken.unavailable


def test_a_reference_rerun_is_judged_with_a_floor_of_its_own() -> None:
    """A re-run with other processor options is another prompt (fewer image tokens, other pixels): its floor
    runs are planned, measured from the re-run's outputs and picked for the variant compared with it."""
    case = Case("c", CASES / "x.yaml", (CASES / "images" / "astronaut_420.jpg",),
                ({"role": "user", "content": "hi"},), 4, (), {})
    runs = {"floor-float64": {"dtype": "float64"}}
    planned = reference_requests([case], {"c": "p"}, [OPTIONS], Capabilities(overrides=frozenset({"dtype"})),
                                 runs, mm_options={"max_pixels": 4096})
    by_name = {r.variant: r for r in planned}
    rerun_floor = by_name["floor-float64|reference-options"]
    assert rerun_floor.overrides == {"dtype": "float64"} and rerun_floor.mm_kwargs == {"max_pixels": 4096}
    assert by_name["floor-float64"].mm_kwargs == {}
    ref = output([1, IMG, 5, 6], [-1.0, -0.5, -2.0], [7], [-0.1])
    rerun = output([1, IMG, 5, 6], [-1.0, -0.7, -2.5], [7], [-0.1])
    outputs = {"floor-float64": output([1, IMG, 5, 6], [-1.0, -0.5, -2.0 + 1e-6], [7], [-0.1]),
               "reference-options": rerun,
               "floor-float64|reference-options": output([1, IMG, 5, 6], [-1.0, -0.7, -2.5 + 4e-3], [7], [-0.1])}
    floors = case_floors(ref, outputs, {"float32": runs}, IMG)
    assert floors[floor_key("float32")].metrics["prefill_max"] == pytest.approx(1e-6)
    assert floors[floor_key("float32", "reference-options")].metrics["prefill_max"] == pytest.approx(4e-3)
    assert _floor_of(floors, Variant("processor-options", reference_mm=True), "float32") is floors["float32|reference-options"]
    assert _floor_of(floors, Variant("batched"), "float32") is floors["float32"]


def test_floor_runs_follow_the_engine_dtype() -> None:
    assert floor_runs("float32", "float32", "eager", "float64") == {
        "floor-float64": {"dtype": "float64"},
        "floor-float32-eager": {"dtype": "float32", "attn_implementation": "eager"}}
    assert floor_runs("bfloat16", "float32", "eager", "float64") == {
        "floor-bfloat16": {"dtype": "bfloat16"},
        "floor-bfloat16-eager": {"dtype": "bfloat16", "attn_implementation": "eager"}}


def test_a_finding_is_rendered_with_its_floor_and_ratio() -> None:
    f = check_metric("prefill_max", 0.14, BF16, 0.082)
    assert finding_text(f).startswith("vs reference: prefill_max = 0.14")
    bad = check_metric("prefill_max", 4.8, F32, 6.7e-6)
    assert finding_text(bad) == ("vs reference: prefill_max = 4.8 > 5.56e-05 (8 x floor + atol; 7.16e+05x floor 6.7e-06)")
