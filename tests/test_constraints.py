"""The reference's logit bias and choice constraint (harness.engines.constraints): pure, and held to the engines'
own grammar library on the default model's tokenizer."""
from __future__ import annotations

from pathlib import Path

import pytest

from harness.engines.base import Structured
from harness.engines.constraints import ChoiceMask, bias_ids, biased, finite

TEXTS = [None, "r", "re", "red", " and", " blue", "b", "blue", "bl", "ack", "x", "no"]  # id 0: a special token
EOS = 0


def mask(*choice: str) -> ChoiceMask:
    return ChoiceMask(Structured(choice), TEXTS, {EOS}, vocab=len(TEXTS))


def test_a_choice_allows_every_spelling_of_what_is_left_and_the_stop_once_whole() -> None:
    m = mask("red", "red and blue", "black", "no")
    assert m.allowed([]) == [1, 2, 3, 6, 8, 11]  # r, re, red, b, bl, no: each a prefix of a choice
    assert m.allowed([2]) == []  # "re" then: nothing spells "d" alone here
    assert m.allowed([3]) == [EOS, 4]  # "red" is whole (EOS) and a prefix of "red and blue" (" and")
    assert m.allowed([3, 4]) == [5]
    assert m.allowed([3, 4, 5]) == [EOS]
    assert m.allowed([8, 9]) == [EOS] and m.allowed([8, 9, EOS, EOS]) == [EOS]  # past the end: the stop again
    assert m.allowed([10]) == []  # off every choice: nothing


def test_the_mask_puts_what_it_excludes_at_minus_infinity() -> None:
    import torch

    logits = torch.arange(len(TEXTS), dtype=torch.float32)
    out = mask("no").masked(logits, [])
    assert out[11] == 11.0 and bool((out[:11] == -float("inf")).all())
    processed = mask("no").processor(prompt_len=2)(torch.tensor([[5, 6, 11]]), logits[None])
    assert processed[0, EOS] == 0.0 and bool((processed[0, 1:] == -float("inf")).all())  # "no" done: EOS only
    assert finite([(11, -0.5), (3, -float("inf"))]) == [(11, -0.5)]


def test_a_bias_by_text_lands_on_the_first_token_of_each_text(tiny_model_dir: Path) -> None:
    import torch
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    first = {text: tokenizer.encode(text, add_special_tokens=False)[0] for text in ("The", " red", " reddish")}
    assert first[" red"] == first[" reddish"]  # " reddish" is " red" + "dish" here: two biases on one token add up
    ids = bias_ids(tokenizer, {"The": -100, " red": 4, " reddish": 1})
    the = first["The"]
    assert ids == {the: -100.0, first[" red"]: 5.0}
    logits = torch.zeros(1, len(tokenizer))
    out = biased(ids)(None, logits)
    assert out[0, the] == -100 and out.sum() == sum(ids.values()) and logits.abs().sum() == 0
    with pytest.raises(ValueError, match="no token"):
        bias_ids(tokenizer, {"": 1})


def test_the_choice_mask_equals_the_engines_grammar_on_the_models_tokenizer(tiny_model_dir: Path) -> None:
    """At every step of every spelling the reference's allowed tokens are xgrammar's (what vLLM masks with): a
    difference would move every masked logprob the engine returns."""
    import torch
    import xgrammar as xgr
    from transformers import AutoTokenizer

    from harness.engines.constraints import token_texts
    from harness.inputs.detokenize import Detokenizer
    from harness.run.variants import load_variants

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    vocab = len(tokenizer)
    structured = load_variants().get("structured-choice").request["structured"]
    eos = sorted(Detokenizer(str(tiny_model_dir)).eos_ids)
    ours = ChoiceMask(structured, token_texts(tokenizer), eos, vocab)
    info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab, stop_token_ids=eos)
    grammar = xgr.GrammarCompiler(info).compile_grammar(
        "root ::= " + " | ".join('"' + c + '"' for c in structured.choice))
    for choice in structured.choice:
        matcher, answer = xgr.GrammarMatcher(grammar), []
        for token in [*tokenizer.encode(choice, add_special_tokens=False), eos[0]]:
            bitmask = xgr.allocate_token_bitmask(1, vocab)
            matcher.fill_next_token_bitmask(bitmask)
            theirs = torch.zeros(1, vocab)
            xgr.apply_token_bitmask_inplace(theirs, bitmask)
            assert ours.allowed(answer) == torch.nonzero(theirs[0] == 0).flatten().tolist(), (choice, answer)
            assert matcher.accept_token(token)
            answer.append(token)
