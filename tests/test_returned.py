"""What an engine returns after the logits, checked for what it claims (harness.judging.compare.returned): pure."""
from __future__ import annotations

from pathlib import Path

from harness.core.schema import EngineOutput, Finding, TokenLogprobs
from harness.engines.base import Stop
from harness.engines.stops import under_stops
from harness.judging.compare.returned import after_logits, rank_findings, text_finding

WORDS = {1: "A", 2: " red", 3: " circle", 4: ".", 5: " is", 6: " big", 9: "<eos>"}


def decode(ids) -> str:
    return "".join(WORDS[i] for i in ids if i != 9)


def step(token: int, logprob: float, top: list[tuple[int, float]], ranks: list[int] | None = None,
         rank: int | None = None) -> TokenLogprobs:
    return TokenLogprobs(token, logprob, top, ranks if ranks is not None else list(range(1, len(top) + 1)), rank)


def output(ids: list[int], text: str = "", finish: str = "") -> EngineOutput:
    steps = [step(i, -0.1, [(i, -0.1), (i + 1, -3.0)], rank=1) for i in ids]
    return EngineOutput("c", "e", output_ids=ids, output_logprobs=steps, output_text=text or decode(ids),
                        finish_reason=finish)


def test_ranks_and_logprobs_are_held_to_what_they_claim() -> None:
    assert rank_findings(output([1, 2, 3])) == []
    bad = output([1, 2, 3])
    bad.output_logprobs[1] = step(2, -0.1, [(2, -0.1), (7, -3.0)], ranks=[2, 3], rank=2)  # shifted ranks
    bad.output_logprobs[2] = step(3, -2.0, [(8, -0.1), (9, -1.0)], rank=2)  # claims rank 2, not in the top
    (finding,) = rank_findings(bad)
    assert finding.metric == "logprob_ranks" and finding.value == 2 and "output step 1: ranks [2, 3]" in finding.detail
    increasing = output([1])
    increasing.output_logprobs[0] = step(1, -0.1, [(1, -0.1), (4, 0.5)], rank=1)
    assert "increase along the ranks" in rank_findings(increasing)[0].detail
    outside = output([1])
    outside.output_logprobs[0] = step(1, -0.015, [(5, -0.01), (4, -0.02)], rank=3)  # outside, yet above the last
    assert "more likely than its last" in rank_findings(outside)[0].detail


def test_the_reference_answer_under_stop_rules_is_cut_where_they_end_it() -> None:
    reference = output([1, 2, 3, 4, 9, 9], finish="length")
    eos = under_stops(reference, Stop(ignore_eos=False), frozenset({9}), decode)
    assert (eos.output_ids, eos.output_text, eos.finish_reason) == ([1, 2, 3, 4, 9], "A red circle.", "stop")
    string = under_stops(reference, Stop(strings=(" circ",)), frozenset({9}), decode)
    assert (string.output_ids, string.output_text, string.finish_reason) == ([1, 2, 3], "A red", "stop")
    token = under_stops(reference, Stop(token_ids=(2,)), frozenset({9}), decode)
    assert token.output_ids == [1, 2] and len(token.output_logprobs) == 2
    none = under_stops(reference, Stop(), frozenset({9}), decode)
    assert (none.output_ids, none.finish_reason) == ([1, 2, 3, 4, 9, 9], "length")


def test_no_stop_rule_ends_an_answer_before_its_minimum_length() -> None:
    """Under min_tokens the stop ids are masked until then (the answer goes on where it would have ended) and a
    stop string counts only where it ends past the first min_tokens tokens' text, as vLLM's detokenizer has it."""
    import torch

    from harness.engines.stops import min_tokens_mask

    reference = output([1, 2, 9, 3, 5, 9, 4], finish="length")
    late = under_stops(reference, Stop(ignore_eos=False, min_tokens=3), frozenset({9}), decode)
    assert (late.output_ids, late.output_text, late.finish_reason) == ([1, 2, 9, 3, 5, 9], "A red circle is", "stop")
    string = under_stops(output([1, 5, 2, 5, 6]), Stop(strings=(" is",), min_tokens=2), frozenset(), decode)
    assert (string.output_ids, string.output_text) == ([1, 5, 2, 5], "A is red")  # the first " is" is too early
    straddling = under_stops(output([1, 5, 2, 5, 6]), Stop(strings=(" is red",), min_tokens=2), frozenset(), decode)
    assert straddling.output_text == "A"  # it ends past the first two tokens' text: it counts
    mask = min_tokens_mask(Stop(ignore_eos=False, token_ids=(4,), min_tokens=2), frozenset({9}), prompt_len=3)
    scores = torch.zeros(1, 10)
    early = mask(torch.zeros(1, 4, dtype=torch.long), scores)  # one token generated
    assert early[0, 9] == early[0, 4] == -float("inf") and early[0, :4].tolist() == [0.0] * 4
    assert mask(torch.zeros(1, 5, dtype=torch.long), scores) is scores and scores.max() == 0  # two: nothing masked
    assert text_finding(output([1, 5, 2, 5], "A is red", "stop"), decode, Stop(strings=(" is",), min_tokens=2)) \
        is None


def test_text_must_be_the_decode_of_the_ids() -> None:
    assert text_finding(output([1, 2, 3]), decode, Stop()) is None
    spaced = output([1, 2, 3], text="A red  circle")
    finding = text_finding(spaced, decode, Stop())
    assert finding is not None and finding.metric == "text_matches_ids" and "at character 6" in finding.detail
    stopped = output([1, 2, 3], text="A red")  # stopped on " circ": the text ends before it
    assert text_finding(stopped, decode, Stop(strings=(" circ",))) is None


def test_a_cell_failing_only_after_the_logits_is_named_so() -> None:
    def fail(metric: str) -> Finding:
        return Finding(metric, "fail")

    assert after_logits([fail("text_matches_ids"), fail("rouge_l")]) == ["text_matches_ids"]
    assert after_logits([fail("logprob_ranks")]) == ["logprob_ranks"]
    assert after_logits([fail("text_matches_ids"), fail("prefill_max")]) == []
    assert after_logits([fail("rouge_l")]) == []


def test_the_models_eos_is_the_tokenizers_and_its_generation_configs(tiny_model: str) -> None:
    """An engine honouring EOS stops at either (vLLM adds the generation config's to the stop ids): the reference
    cut by the stop rules must too, or a checkpoint whose two differ (the built-in Qwen2-VLs: <|im_end|> and
    <|endoftext|>) fails every case that reaches the other."""
    import json

    from harness.inputs.detokenize import Detokenizer
    from harness.inputs.models import resolve_model

    folder = resolve_model(tiny_model)
    detokenizer = Detokenizer(folder)
    config = json.loads((Path(folder) / "config.json").read_text())
    declared = config.get("eos_token_id", config.get("text_config", {}).get("eos_token_id"))
    assert detokenizer.tokenizer.eos_token_id in detokenizer.eos_ids
    assert set([declared] if isinstance(declared, int) else declared) <= detokenizer.eos_ids


def test_rank_findings_at_every_position_equal_the_one_position_rule() -> None:
    """The prompt's positions are screened with array arithmetic (`_suspects`, over the prompt's columns) before the
    one-position rule (`_rank_problem`) reads them: on random entries, with ranks returned (right or wrong, as vLLM
    returns them) or not, every kind of problem is still found, counted and named as the rule alone finds it."""
    import random

    from harness.judging.compare.returned import _rank_problem

    for seed in range(400):
        rng = random.Random(seed)
        ranked = seed % 2 == 1

        def entry() -> TokenLogprobs:
            k = rng.choice([0, 1, 3, 5])
            lps = sorted((-rng.random() * 3 for _ in range(k)), reverse=True)
            if rng.random() < 0.05 and k > 1:
                lps[1] += 0.5  # logprobs that rise along the ranks
            top = [(rng.randint(0, 6), lp) for lp in lps]
            token = rng.choice([t for t, _ in top] + [rng.randint(0, 9)]) if top else rng.randint(0, 9)
            logprob = dict(top).get(token, -3.5 - rng.random())
            if rng.random() < 0.05:
                logprob += 0.01  # the token's logprob disagrees with its top-k entry, or beats the top-k
            if not ranked:
                return TokenLogprobs(token, logprob, top)
            ranks = list(range(1, k + 1))
            if rng.random() < 0.05 and k:
                ranks[rng.randrange(k)] += 1  # not 1..k
            ids = [t for t, _ in top]
            rank = ranks[ids.index(token)] if token in ids else k + 1 + rng.randint(0, 3)
            if rng.random() < 0.05:
                rank = rng.randint(1, k + 2)  # the token's rank against its top-k entry, or inside a top-k it is not in
            return TokenLogprobs(token, logprob, top, ranks if rng.random() > 0.1 else [],
                                 rank if rng.random() > 0.1 else None)

        prompt = [None] + [entry() if rng.random() > 0.05 else None for _ in range(rng.randint(0, 80))]
        out = EngineOutput("c", "e", prompt_logprobs=prompt, output_logprobs=[entry() for _ in range(5)])
        steps = [(f"prompt position {i}", p) for i, p in enumerate(prompt) if p is not None]
        steps += [(f"output step {i}", p) for i, p in enumerate(out.output_logprobs)]
        expected = [(where, problem) for where, p in steps if (problem := _rank_problem(p))]
        found = rank_findings(out)
        if not expected:
            assert found == [], seed
        else:
            assert found and found[0].value == len(expected), (seed, expected[:1], found)
            assert found[0].detail == f"{len(expected)} positions; first at {expected[0][0]}: {expected[0][1]}", seed


def test_the_references_penalties_follow_the_documented_rule() -> None:
    """Repetition over prompt and output tokens (a positive logit divided, a negative one multiplied), then
    frequency x count and presence once, over the output's tokens only: a prompt token is never counted by them."""
    import torch

    from harness.engines.base import Penalties
    from harness.engines.hf import penalized

    prompt = [0, 1, 1]
    ids = torch.tensor([[*prompt, 2, 2, 3]])
    logits = torch.tensor([[1.0, 2.0, -1.0, 0.5, 4.0]])
    out = penalized(Penalties(presence=0.25, frequency=0.5, repetition=2.0), len(prompt))(ids, logits)
    expected = [1.0 / 2, 2.0 / 2, -1.0 * 2 - 0.5 * 2 - 0.25, 0.5 / 2 - 0.5 - 0.25, 4.0]
    assert out.tolist() == [expected] and logits.tolist() == [[1.0, 2.0, -1.0, 0.5, 4.0]]  # the input untouched
    only_prompt = penalized(Penalties(presence=1.0, frequency=1.0), len(prompt))(ids[:, :3], logits)
    assert only_prompt.tolist() == logits.tolist()  # prompt tokens alone: no presence or frequency penalty


def test_a_choice_that_parts_where_the_logits_agree_is_named_after_them() -> None:
    from harness.judging.compare.returned import choice_finding

    def answer(ids: list[int], top: list[tuple[int, float]]) -> EngineOutput:
        return EngineOutput("c", "e", output_ids=ids, output_logprobs=[step(i, dict(top).get(i, -9.0), top)
                                                                       for i in ids])

    reference = answer([1, 2, 3], [(1, -0.1), (2, -0.5), (3, -2.0)])
    parted = answer([1, 3, 2], [(1, -0.1), (2, -0.5), (3, -2.0)])  # the same logits, another choice at step 1
    found = choice_finding(reference, parted, bound=1e-3)
    assert found is not None and found.metric == "processed_choice" and "at output step 1" in found.detail
    assert choice_finding(reference, reference, bound=1e-3) is None  # no divergence
    moved = answer([1, 3, 2], [(1, -0.1), (2, -0.9), (3, -0.3)])  # the logits moved: a difference in the model
    assert choice_finding(reference, moved, bound=1e-3) is None
    tied = answer([1, 3], [(1, -0.1), (2, -0.5), (3, -0.5)])
    assert choice_finding(answer([1, 2], [(1, -0.1), (2, -0.5), (3, -0.5)]), tied, bound=1e-3) is None  # a tie
    parted_only = [found, Finding("first_divergence", "fail"), Finding("rouge_l", "fail")]
    assert after_logits(parted_only) == ["processed_choice"]
    assert after_logits([Finding("first_divergence", "fail")]) == []  # a divergence alone names no stage


def test_stop_tokens_written_by_text_become_the_models_stop_token_ids(tiny_model_dir: Path) -> None:
    """`stop: {tokens: [TEXT]}`: each text's first token by the model's tokenizer joins the stop token ids (what
    the engines take); a stop rule without tokens is left as it is, its tokenizer never read."""
    from transformers import AutoTokenizer

    from harness.engines.stops import with_tokens

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    square = tokenizer.encode(" square", add_special_tokens=False)[0]
    stop = with_tokens(Stop(ignore_eos=False, token_ids=(7,), tokens=(" square", " square")), tokenizer)
    assert stop == Stop(ignore_eos=False, token_ids=(7, square))
    plain = Stop(strings=(" in ",))
    assert with_tokens(plain, None) is plain


def test_a_rerun_recorded_before_a_setting_gained_a_field_is_still_fresh() -> None:
    """A recorded `reference-min-tokens` holds the stop rule's fields as they were; `tokens`, added since, takes
    its default when read back, so the recording still equals the variant's values (and a changed value does not)."""
    from harness.run.references import recorded_values, same_values

    recorded = {"stop": {"ignore_eos": False, "strings": [], "token_ids": [], "min_tokens": 12}}
    assert recorded_values(recorded) == same_values({"stop": Stop(ignore_eos=False, min_tokens=12)})
    assert recorded_values(recorded) != same_values({"stop": Stop(ignore_eos=False, min_tokens=8)})
    assert recorded_values(None) is None
