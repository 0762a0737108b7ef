"""Output text similarity with rouge-score."""
from __future__ import annotations

import functools
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rouge_score.rouge_scorer import RougeScorer


class _WhitespaceTokenizer:
    """Split on whitespace and keep every character.

    rouge-score's default tokenizer lowercases and drops non-alphanumerics,
    which would call "Cat!" and "cat?" identical; parity needs exact text.
    """

    def tokenize(self, text: str) -> list[str]:
        return text.split()


@functools.cache
def _scorer() -> RougeScorer:
    """Built on the first differing pair: rouge-score imports nltk, a quarter of a second of start-up that
    a run whose texts all match never needs."""
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], tokenizer=_WhitespaceTokenizer())


def rouge_l(reference: str, engine: str) -> float:
    """ROUGE-L F of the two output texts; identical texts score 1.0.

    Identical texts with no whitespace-separated tokens (e.g. both empty)
    would otherwise score 0.0 in rouge-score.
    """
    if reference == engine:
        return 1.0
    return float(_scorer().score(reference, engine)["rougeL"].fmeasure)
