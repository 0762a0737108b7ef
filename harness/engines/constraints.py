"""What a request does to the logits before the engine's choice, besides penalties: a logit bias and a
structured-output constraint, as the engines document them, so the reference can apply the same.

- `logit_bias` is written by text (`{TEXT: BIAS}`), since token ids are the model's: each text's first token by
  the model's tokenizer (`bias_ids`) gets BIAS added to its logit (vLLM's `LogitBiasLogitsProcessor`, OpenAI's
  `logit_bias`), before penalties; the logprobs the engines return stay the raw ones.
- `structured: {choice: [...]}`: the answer is one of the texts, spelled by any tokens (vLLM compiles the
  choices to an xgrammar grammar): at each step the tokens whose text keeps the answer a prefix of some
  choice, and the stop ids once it is a whole one (`ChoiceMask`). vLLM applies that mask to the logits before
  its sampler takes the raw logprobs, so the logprobs it returns are of the masked logits: the reference's are
  too (`ChoiceMask.masked`), and a top-k entry at -inf (a token the mask excluded) is no candidate (`finite`).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

from harness.engines.base import Structured


def first_token(tokenizer: Any, text: str, field: str) -> int:
    """The id of `text`'s first token (without special tokens): how a variant names a token by text. ValueError
    names the `field` and a text the tokenizer makes no token of."""
    ids = tokenizer.encode(text, add_special_tokens=False)
    if not ids:
        raise ValueError(f"{field}: the tokenizer makes no token of {text!r}")
    return ids[0]


def bias_ids(tokenizer: Any, bias: Mapping[str, float]) -> dict[int, float]:
    """`{TEXT: BIAS}` as token ids: each text's first token; two texts on one token add up."""
    out: dict[int, float] = {}
    for text, value in bias.items():
        token = first_token(tokenizer, text, "logit_bias")
        out[token] = out.get(token, 0.0) + float(value)
    return out


def biased(bias: Mapping[int, float]) -> Callable[[Any, Any], Any]:
    """A logits processor (transformers' signature) adding `bias` to its tokens' logits."""
    ids, values = list(bias), list(bias.values())

    def apply(input_ids: Any, scores: Any) -> Any:
        import torch

        scores = scores.clone()
        scores[:, ids] += torch.tensor(values, dtype=scores.dtype, device=scores.device)
        return scores

    return apply


def token_texts(tokenizer: Any) -> list[str | None]:
    """Each id's text as a grammar sees it (byte-level BPE decoded, SentencePiece's `▁` a space); None for special
    tokens, which spell no text."""
    special = {i for i, t in tokenizer.added_tokens_decoder.items() if t.special}
    texts: list[str | None] = []
    for i, token in enumerate(tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))):
        if i in special or token is None:
            texts.append(None)
            continue
        text = tokenizer.convert_tokens_to_string([token])
        texts.append(" " + text if token.startswith("▁") and not text.startswith(" ") else text)
    return texts


class ChoiceMask:
    """The tokens a choice constraint allows after an answer so far: those whose text keeps it a prefix of one of
    the choices, and the stop ids where it already is a whole one. Pure: a function of the answer's ids."""

    def __init__(self, structured: Structured, texts: Sequence[str | None], stop_ids: Collection[int],
                 vocab: int) -> None:
        self.choices, self.texts, self.stop_ids, self.vocab = structured.choice, texts, sorted(stop_ids), vocab
        self.by_text: dict[str, list[int]] = {}
        for i, text in enumerate(texts):
            if text:
                self.by_text.setdefault(text, []).append(i)

    def allowed(self, answer: Sequence[int]) -> list[int]:
        """The ids allowed next after `answer` (the output's ids so far)."""
        done = "".join(self.texts[i] or "" for i in answer if i not in self.stop_ids)
        ids: set[int] = set()
        for choice in self.choices:
            if not choice.startswith(done):
                continue
            rest = choice[len(done):]
            ids.update(i for end in range(1, len(rest) + 1) for i in self.by_text.get(rest[:end], ()))
            if not rest:
                ids.update(self.stop_ids)
        return sorted(i for i in ids if i < self.vocab)

    def masked(self, logits: Any, answer: Sequence[int]) -> Any:
        """`logits` (one step's, last dimension the vocabulary) with every token not allowed after `answer` at
        -inf: what the engine scores and chooses from."""
        import torch

        keep = torch.zeros(logits.shape[-1], dtype=torch.bool, device=logits.device)
        keep[self.allowed(answer)] = True
        return logits.masked_fill(~keep, -float("inf"))

    def masked_steps(self, logits: Any, answer: Sequence[int]) -> Any:
        """One row of `logits` per token of `answer` (`logits[i]` scores `answer[i]`), each masked after the
        tokens before it: an answer's steps as the engine scored them."""
        import torch

        return torch.stack([self.masked(step, answer[:i]) for i, step in enumerate(logits)])

    def processor(self, prompt_len: int) -> Callable[[Any, Any], Any]:
        """The mask as a logits processor (transformers' signature)."""
        return lambda input_ids, scores: self.masked(scores, input_ids[0, prompt_len:].tolist())


def finite(top: Sequence[tuple[int, float]]) -> list[tuple[int, float]]:
    """A top-k without the entries at -inf: tokens a constraint excluded are no candidates."""
    return [(t, lp) for t, lp in top if math.isfinite(lp)]
