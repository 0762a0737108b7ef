"""A sampled answer judged without the engine's random stream: could the engine have drawn its tokens at all?

The reference scores the engine's own tokens in one forward over the prompt and them (a `forced` request,
`harness.engines.hf.processed_steps`): at each step the distribution the request's penalties, temperature,
top-k and top-p make. A token outside that step's allowed set (below the top-k, or past the top-p nucleus)
cannot have been drawn by a correct sampler, whatever its seed: a sampler that ignores or misapplies top-k or
top-p, a temperature applied to the wrong tensor, a child of an n > 1 request sampled from another request's
logits. The raw logprobs the engine returns for these tokens are compared with the reference's by the floor
rule as a greedy answer's are (`harness.judging.compare`); this module holds the allowed-set rule, and the
spread rule: a sampler with the wrong temperature (ignored, applied twice, another request's) draws only
allowed tokens, but too often from the tail or too seldom. Where each drawn token lies in its step's
distribution (`ProcessedStep.position`, the probability before it plus half its own) averages 1/2 under a
correct sampler at every step, whatever the distribution, with a variance the distribution gives
(`ProcessedStep.spread`): summed over a cell's draws, the excess is a martingale, and Freedman's inequality
bounds how far it strays by chance, with no assumption on the distributions.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

from harness.core.schema import Finding, ProcessedStep
from harness.engines.base import Sampling

CLOSER = 10  # how much closer to the processed logprobs than to the raw ones returned values must be to be those


def outside(step: ProcessedStep, sampling: Sampling, slack: float) -> str | None:
    """Why a correct sampler could not have drawn `step`'s token, None when it could. `slack` is how far apart
    (in processed logprob) the engine's and the reference's numbers may legitimately be: a token is outside only
    when it stays outside with every probability moved by that much in the engine's favour."""
    if sampling.top_k > 0 and step.rank > sampling.top_k and step.kth is not None and step.kth - step.logprob > slack:
        return (f"rank {step.rank}, below the top-{sampling.top_k} (its processed logprob {step.logprob:.4g}, the "
                f"{sampling.top_k}th's {step.kth:.4g})")
    nucleus = step.above / step.top_k_mass if step.top_k_mass > 0 else 1.0
    if sampling.top_p < 1.0 and nucleus * math.exp(-slack) >= sampling.top_p:
        return (f"past the top-p {sampling.top_p:g} nucleus: the tokens more likely than it hold {nucleus:.4g} of "
                f"the probability (its processed logprob {step.logprob:.4g}, rank {step.rank})")
    return None


def slack(bound: float, sampling: Sampling) -> float:
    """How far apart the engine's and the reference's processed logprobs may be, from the raw logprob bound
    `bound`: divided by the temperature, and twice (a token's share and the normalizer's)."""
    return 2 * bound / sampling.temperature if sampling.temperature > 0 else 0.0


def support_finding(steps: Sequence[ProcessedStep], sampling: Sampling, bound: float,
                    attempt: int = 0) -> Finding | None:
    """The sampled tokens of one answer that lie outside the reference's allowed set (`outside`), one finding
    naming the first; None when every token could have been drawn. `bound` is the raw logprob bound the answer's
    scored logprobs are judged with (`slack`)."""
    allowed = slack(bound, sampling)
    bad = [(i, s, why) for i, s in enumerate(steps) if (why := outside(s, sampling, allowed))]
    if not bad:
        return None
    i, step, why = bad[0]
    return Finding("sampled_allowed", "fail", float(len(bad)), rule="structural", against="scored", attempt=attempt,
                   bound=bound, detail=f"{len(bad)} of {len(steps)} sampled tokens could not have been drawn under "
                                       f"temperature {sampling.temperature:g}, top-k {sampling.top_k or 'off'}, "
                                       f"top-p {sampling.top_p:g}; first at output step {i}: token {step.token_id}, "
                                       f"{why}")


def processed_finding(steps: Sequence[ProcessedStep], returned: Sequence[float], raw: Sequence[float],
                      slack: float, attempt: int = 0) -> Finding | None:
    """The engine returned the processed logprobs of its sampled tokens (under penalties, temperature, top-k and
    top-p, renormalized: `logprob - log(kept)`) where the raw ones were asked for (vLLM #26014's class): its
    values lie within `slack` of the processed ones at every step and `CLOSER` times closer to them than to the
    raw ones (`raw`, the reference's). None otherwise (a difference the decode comparison judges)."""
    if not steps or len(returned) != len(steps) or len(raw) != len(steps):
        return None
    processed = [s.logprob - math.log(s.kept) if s.kept > 0 else -math.inf for s in steps]
    off_processed = max(abs(r - p) for r, p in zip(returned, processed))
    off_raw = max(abs(r - p) for r, p in zip(returned, raw))
    if not (off_processed <= slack and off_processed * CLOSER < off_raw):
        return None
    return Finding("returned_logprobs", "fail", off_raw, rule="structural", against="scored", attempt=attempt,
                   bound=slack, detail=f"the logprobs returned for the sampled tokens are the processed ones "
                                       f"(after penalties, temperature, top-k/top-p; within {off_processed:.3g}), not "
                                       f"the raw ones asked for ({off_raw:.3g} from them)")


ALPHA = 1e-6  # the chance a correct sampler's draws fail the spread rule in a cell (two-sided, a strict bound)
LEVELS_BELOW, LEVELS = 6, 40  # the powers of two a cell's summed variance is rounded up to: 2^-6 .. 2^33


def spread_finding(steps: Sequence[ProcessedStep], sampling: Sampling, bound: float,
                   alpha: float = ALPHA) -> Finding | None:
    """The draws of a cell's sampled answers, too often from the likelier or the less likely part of their
    steps' distributions for a correct sampler (a temperature too low or too high): the positions' excess over
    1/2, summed, past Freedman's bound at `alpha` (each term within 1/2 of its mean, the sum of the variances
    `spread`), widened by what the engine's legitimate error (`slack` of the raw bound `bound`) can move each
    position. None within it, or with no draw to judge. That widening is a worst case per draw, so it grows
    with the draws faster than the chance term: with a bfloat16 bound (0.05 and more) it reaches a position's
    whole range and the rule can no longer fail (the engine's own error could then explain any spread)."""
    drawn = [s for s in steps if s.position is not None]
    if not drawn:
        return None
    excess = sum(s.position - 0.5 for s in drawn)  # type: ignore[operator]
    # Freedman's bound holds for a variance fixed in advance: the summed variance is rounded up to a power of
    # two, and the chance shared between the LEVELS powers it may take (a union over them).
    variance = 2.0 ** math.ceil(math.log2(max(sum(s.spread for s in drawn), 2.0 ** -LEVELS_BELOW)))
    log_term = math.log(2 * LEVELS / alpha)
    chance = log_term / 6 + math.sqrt((log_term / 6) ** 2 + 2 * log_term * variance)  # terms within 1/2
    error = len(drawn) * min(0.5, math.expm1(2 * slack(bound, sampling)))  # each position moved at most by this
    if abs(excess) <= chance + error:
        return None
    way = ("less likely tokens than it makes likely: a higher temperature than asked (or none), or a flatter "
           "distribution" if excess > 0 else
           "likelier tokens than it makes likely: a lower temperature than asked (or one applied twice), or a "
           "sharper distribution")
    return Finding("sampled_spread", "fail", excess / (chance + error), rule="structural", against="scored",
                   bound=chance + error,
                   detail=f"the {len(drawn)} sampled tokens lie {excess:+.3g} from the middle of their steps' "
                          f"distributions in all (a correct sampler strays at most {chance + error:.3g} but once in "
                          f"{1 / alpha:.0e}): the engine drew {way} under temperature {sampling.temperature:g}, "
                          f"top-k {sampling.top_k or 'off'}, top-p {sampling.top_p:g}")
