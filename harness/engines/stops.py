"""Where an output ends under a request's stop rules (`Stop`), as the engines document them (vLLM's
`MinTokensLogitsProcessor` and detokenizer, SGLang's `min_new_tokens`).

EOS (when honoured) and stop token ids end the output after the token (whose text is left out); a stop string
ends it after the token that completes it (the text ends before the string); none of them before `min_tokens`
output tokens: the stop ids are masked out of the logits until then (`min_tokens_mask`), and a stop string
counts only if it ends in the text after them. Pure functions: the judge cuts the reference's answer with them,
and the HF adapter honours the rules with them.
"""
from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import replace
from typing import Any

from harness.core.schema import EngineOutput
from harness.engines.base import Stop
from harness.engines.constraints import first_token

Decode = Callable[[Sequence[int]], str]


def cut_at_stop(text: str, strings: Iterable[str], after: int = 0) -> tuple[str, bool]:
    """`text` up to the earliest stop string in it that ends past character `after` (engines return the text
    before it), and whether there was one."""
    found = [at for s in strings if s and (at := text.find(s, max(0, after - len(s) + 1))) >= 0]
    return (text[:min(found)], True) if found else (text, False)


def with_tokens(stop: Stop, tokenizer: Any) -> Stop:
    """`stop` with its `tokens` (texts) as stop token ids by the model's tokenizer, each text's first token: what
    the engines take. `tokenizer` is only read when there are some."""
    if not stop.tokens:
        return stop
    ids = [first_token(tokenizer, text, "stop.tokens") for text in stop.tokens]
    return replace(stop, token_ids=tuple(dict.fromkeys((*stop.token_ids, *ids))), tokens=())


def stop_ids(stop: Stop, eos_ids: Collection[int]) -> frozenset[int]:
    """The ids that end an output: the stop token ids, and EOS where it is honoured."""
    return frozenset(stop.token_ids) | (frozenset() if stop.ignore_eos else frozenset(eos_ids))


def under_stops(output: EngineOutput, stop: Stop, eos_ids: Collection[int], decode: Decode) -> EngineOutput:
    """A greedy answer generated past every stop rule (EOS ignored, exactly max_new_tokens; under `min_tokens`,
    with the stop ids masked until then: `min_tokens_mask`), cut where the request's rules end it: after the
    first stop id or the token completing a stop string from `stop.min_tokens` tokens on, finish reason "stop";
    else all of it, "length". Greedy decisions do not depend on where the output ends, so this is what an
    engine honouring the rules makes."""
    ids, ending = output.output_ids, stop_ids(stop, eos_ids)
    after = len(decode(ids[:stop.min_tokens])) if stop.min_tokens and stop.strings else 0
    for i, tid in enumerate(ids):
        if i < stop.min_tokens:
            continue
        if tid in ending:
            return _cut(output, i + 1, decode(ids[:i]))
        if stop.strings:
            text, hit = cut_at_stop(decode(ids[:i + 1]), stop.strings, after)
            if hit:
                return _cut(output, i + 1, text)
    return replace(output, output_text=decode(ids), finish_reason="length")


def _cut(output: EngineOutput, length: int, text: str) -> EngineOutput:
    return replace(output, output_ids=output.output_ids[:length], output_logprobs=output.output_logprobs[:length],
                   output_text=text, finish_reason="stop")


def min_tokens_mask(stop: Stop, eos_ids: Collection[int], prompt_len: int) -> Callable[[Any, Any], Any]:
    """A logits processor (transformers' signature) masking the stop ids out until `stop.min_tokens` tokens have
    been generated, as vLLM's `MinTokensLogitsProcessor` does; the returned logprobs stay the raw ones."""
    masked = sorted(stop_ids(stop, eos_ids))

    def apply(input_ids: Any, scores: Any) -> Any:
        if input_ids.shape[-1] - prompt_len >= stop.min_tokens or not masked:
            return scores
        scores = scores.clone()
        scores[:, masked] = -float("inf")
        return scores

    return apply
