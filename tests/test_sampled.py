"""Sampled answers judged without the engine's random stream: the reference's processed distribution over the
engine's own tokens (`harness.engines.hf.processed_steps`) and the rules on it (`harness.judging.compare.sampled`)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from harness.core.schema import ProcessedStep
from harness.engines.base import Sampling
from harness.judging.compare.sampled import outside, processed_finding, spread_finding, support_finding


def kept_by_sampler(logits: np.ndarray, sampling: Sampling) -> set[int]:
    """The tokens a sampler may draw, by the engines' documented rule, spelled out one token at a time: the
    logits divided by the temperature; top-k keeps the k likeliest; top-p, on those renormalized, keeps a token
    while the tokens more likely than it hold less than p."""
    z = logits / sampling.temperature
    order = sorted(range(len(z)), key=lambda t: -z[t])
    if sampling.top_k:
        order = order[:sampling.top_k]
    probs = np.exp(z[order] - z[order].max())
    probs /= probs.sum()
    kept, above = set(), 0.0
    for token, p in zip(order, probs):
        if above < sampling.top_p:
            kept.add(token)
        above += p
    return kept


@pytest.mark.parametrize("sampling", [Sampling(0.8, top_p=0.9), Sampling(1.0, top_p=0.9, top_k=8),
                                      Sampling(0.5, top_k=3), Sampling(1.3, top_p=0.5, top_k=20)])
def test_the_allowed_set_is_the_samplers(sampling: Sampling) -> None:
    """For every token of random distributions, `outside` (with no slack) says it cannot be drawn exactly when the
    sampler's rule leaves it out; `kept` is the mass of what the rule keeps."""
    import torch

    from harness.engines.hf import processed_steps

    rng = np.random.default_rng(0)
    for _ in range(20):
        logits = rng.normal(0, 3, 40)
        kept = kept_by_sampler(logits, sampling)
        prompt = [0, 1]
        sequence = torch.tensor([*prompt, *range(40)])
        steps = processed_steps(torch.tensor(np.tile(logits, (40, 1)), dtype=torch.float64), sequence, len(prompt),
                                sampling, None)
        for token, step in enumerate(steps):
            assert (outside(step, sampling, 0.0) is None) == (token in kept), (token, step, sorted(kept))
            q = torch.log_softmax(torch.tensor(logits) / sampling.temperature, -1).exp().numpy()
            assert step.kept == pytest.approx(sum(q[t] for t in kept)), token


def step(logprob: float, rank: int, above: float, top_k_mass: float = 1.0, kept: float = 1.0,
         kth: float | None = None) -> ProcessedStep:
    return ProcessedStep(7, logprob, rank, above, top_k_mass, kept, kth)


def test_a_token_outside_only_by_the_engines_legitimate_error_is_not_blamed() -> None:
    """Near the nucleus' edge, or a near tie with the k-th token, the slack decides: the engine's probabilities may
    be off by that much."""
    top_p = Sampling(1.0, top_p=0.9)
    assert outside(step(-3.0, 5, 0.91), top_p, 0.0) is not None
    assert outside(step(-3.0, 5, 0.91), top_p, 0.05) is None  # 0.91 * exp(-0.05) < 0.9
    assert outside(step(-3.0, 5, 0.99), top_p, 0.05) is not None
    top_k = Sampling(1.0, top_k=4)
    assert outside(step(-3.0, 5, 0.5, kth=-2.99), top_k, 0.05) is None
    assert outside(step(-3.0, 5, 0.5, kth=-2.0), top_k, 0.05) is not None
    found = support_finding([step(-0.1, 1, 0.0), step(-5.0, 9, 0.995)], top_p, 0.01, attempt=2)
    assert found is not None and found.metric == "sampled_allowed" and found.value == 1.0 and found.attempt == 2
    assert "1 of 2 sampled tokens" in found.detail and "output step 1" in found.detail


def test_processed_logprobs_returned_as_raw_ones_are_named_so() -> None:
    """Returned values equal to the renormalized processed logprobs, far from the raw ones: a `returned_logprobs`
    finding; values off both ways are left to the decode comparison."""
    steps = [step(-0.2, 1, 0.0, kept=0.9), step(-1.0, 2, 0.6, kept=0.95)]
    processed = [-0.2 - math.log(0.9), -1.0 - math.log(0.95)]
    raw = [-0.5, -1.4]
    found = processed_finding(steps, processed, raw, 1e-3)
    assert found is not None and found.metric == "returned_logprobs"
    assert found.value == pytest.approx(max(abs(p - r) for p, r in zip(processed, raw)))
    assert processed_finding(steps, [p + 0.2 for p in processed], raw, 1e-3) is None
    assert processed_finding(steps, raw, raw, 1e-3) is None


def draws(seed: int, n: int, declared: Sampling, temperature: float) -> list[ProcessedStep]:
    """`n` steps of random 40-token distributions, each token drawn at `temperature` under the declared top-k and
    top-p, then scored as the reference scores an engine's draws: under the declared sampling."""
    import torch

    from harness.engines.hf import processed_steps

    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 2, (n, 40))
    actual = Sampling(temperature, top_p=declared.top_p, top_k=declared.top_k)
    tokens = [rng.choice(sorted(kept), p=weights / weights.sum())
              for row in logits for kept in [kept_by_sampler(row, actual)]
              for weights in [np.exp(row[sorted(kept)] / temperature - (row / temperature).max())]]
    return processed_steps(torch.tensor(logits, dtype=torch.float64), torch.tensor([0, *tokens]), 1, declared, None)


@pytest.mark.parametrize("sampling", [Sampling(0.7), Sampling(1.0, top_p=0.9, top_k=8)])
def test_a_correct_samplers_draws_spread_as_the_positions_say(sampling: Sampling) -> None:
    """Draws at the declared temperature: each draw's position averages 1/2 with the variance `spread` says (the
    standardized sums over 300 answers have mean 0 and deviation 1), and the spread rule never blames them."""
    sums = []
    for seed in range(300):
        steps = draws(seed, 60, sampling, sampling.temperature)
        assert spread_finding(steps, sampling, 0.0) is None, seed
        drawn = [s for s in steps if s.position is not None]
        sums.append(sum(s.position - 0.5 for s in drawn) / math.sqrt(sum(s.spread for s in drawn)))
    assert abs(np.mean(sums)) < 0.2 and 0.85 < np.std(sums) < 1.15, (np.mean(sums), np.std(sums))


@pytest.mark.parametrize("temperature, way", [(1.4, "less likely tokens"), (0.35, "likelier tokens")])
def test_a_wrong_temperature_is_seen_in_how_the_draws_spread(temperature: float, way: str) -> None:
    """Temperature 0.7 asked for (no top-k, no top-p: every token may be drawn), the engine drawing at 1.4
    (ignored, or another request's) or at 0.35 (applied twice): 400 draws lie too far from the middle for a
    correct sampler, by about 1.4 to 2.4 times the bound; a legitimate error in the engine's logprobs (the raw
    bound) is no excuse for it, and a large one is."""
    declared = Sampling(0.7)
    for seed in range(5):
        steps = draws(seed, 400, declared, temperature)
        found = spread_finding(steps, declared, 1e-4)
        assert found is not None and found.metric == "sampled_spread" and way in found.detail, (seed, found)
        assert abs(found.value) > 1.3, (seed, found.value)  # not a near thing
        assert spread_finding(steps, declared, 0.5) is None  # an engine this far off is judged by its logprobs
