"""Next-token distribution statistics per prompt position, as llama.cpp's `--kl-divergence` reports them.

Engines return the top-k logprobs, not the whole distribution, so each side's distribution at a
position is approximated by k + 1 buckets: the reference's top-k tokens, and one bucket for the rest
of the mass (1 - their probabilities). A token of the reference's top-k that the engine did not
return in its own top-k gets the engine's k-th logprob, an upper bound (the engine ranked it lower),
so the approximation can only under-state the KL there; the rest bucket takes what is left, at
least `_TINY`. With the default k = 5 the top-k of the tiny models holds 90-99 % of the mass.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from harness.core.schema import TokenLogprobs

_TINY = 1e-12  # a bucket's least probability, so a rounding-negative rest cannot make the KL infinite


def _engine_logprob(entry: TokenLogprobs, token_id: int) -> float:
    """The engine's logprob of `token_id`, or its k-th (an upper bound) when it is not among those returned."""
    if entry.token_id == token_id:
        return entry.logprob
    for tid, lp in entry.top:
        if tid == token_id:
            return lp
    return min((lp for _, lp in entry.top), default=entry.logprob)


def position_kl(reference: TokenLogprobs, engine: TokenLogprobs) -> float:
    """KL(reference || engine) in nats over the reference's top-k plus a rest bucket."""
    ids = [tid for tid, _ in reference.top]
    p = np.exp(np.array([lp for _, lp in reference.top], dtype=np.float64))
    q = np.exp(np.array([_engine_logprob(engine, tid) for tid in ids], dtype=np.float64))
    p = np.append(p, max(1.0 - p.sum(), _TINY))
    q = np.append(q, max(1.0 - q.sum(), _TINY))
    p, q = p / p.sum(), q / q.sum()
    return max(float(np.sum(p * (np.log(p) - np.log(q)))), 0.0)


def distribution_stats(reference: Sequence[TokenLogprobs | None],
                       engine: Sequence[TokenLogprobs | None]) -> dict[str, float | None]:
    """kl_mean/p99/max, same_top1 (fraction of positions whose most likely token agrees) with its
    standard error, and delta-p (engine minus reference probability of the actual token) RMS and max."""
    kls, same, dps = [], [], []
    for ref, eng in zip(reference, engine):
        if ref is None or eng is None:
            continue
        dps.append(math.exp(_engine_logprob(eng, ref.token_id)) - math.exp(ref.logprob))
        if ref.top and eng.top:
            kls.append(position_kl(ref, eng))
            same.append(ref.top[0][0] == eng.top[0][0])
    out: dict[str, float | None] = dict.fromkeys(
        ("kl_mean", "kl_p99", "kl_max", "same_top1", "same_top1_se", "delta_p_rms", "delta_p_max"))
    if kls:
        values = np.array(kls)
        share = float(np.mean(same))
        out.update(kl_mean=float(values.mean()), kl_p99=float(np.percentile(values, 99)), kl_max=float(values.max()),
                   same_top1=share,
                   same_top1_se=math.sqrt(share * (1 - share) / (len(same) - 1)) if len(same) > 1 else None)
    if dps:
        deltas = np.array(dps)
        out.update(delta_p_rms=float(np.sqrt(np.mean(deltas ** 2))), delta_p_max=float(np.abs(deltas).max()))
    return out
