"""Output text similarity with rouge-score."""
from __future__ import annotations

from rouge_score import rouge_scorer


class _WhitespaceTokenizer:
    """Split on whitespace and keep every character.

    rouge-score's default tokenizer lowercases and drops non-alphanumerics,
    which would call "Cat!" and "cat?" identical; parity needs exact text.
    """

    def tokenize(self, text: str) -> list[str]:
        return text.split()


_SCORER = rouge_scorer.RougeScorer(["rougeL"], tokenizer=_WhitespaceTokenizer())


def rouge_l(reference: str, engine: str) -> float:
    """ROUGE-L F of the two output texts; identical texts score 1.0.

    Identical texts with no whitespace-separated tokens (e.g. both empty)
    would otherwise score 0.0 in rouge-score.
    """
    if reference == engine:
        return 1.0
    return float(_SCORER.score(reference, engine)["rougeL"].fmeasure)
