"""Greedy decode comparisons: common prefix, first divergence, logprob diffs."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from harness.core.schema import TokenLogprobs
from harness.judging.compare.prefill import first_id_mismatch, position_diffs


def compare_greedy(
    ref_ids: Sequence[int],
    ref_logprobs: Sequence[TokenLogprobs],
    eng_ids: Sequence[int],
    eng_logprobs: Sequence[TokenLogprobs],
) -> dict[str, object]:
    """decode_common_prefix, first_divergence, decode_max/mean, divergence_in_topk.

    Logprob diffs are taken over the common prefix only: after a divergence
    the two sides condition on different text and their logprobs are not
    comparable.
    """
    divergence = first_id_mismatch(ref_ids, eng_ids)
    common = min(len(ref_ids), len(eng_ids)) if divergence is None else divergence
    diffs = [d for d in position_diffs(ref_logprobs[:common], eng_logprobs[:common]) if d is not None]
    in_topk = None
    if divergence is not None and divergence < min(len(ref_logprobs), len(eng_logprobs)):
        ref_step, eng_step = ref_logprobs[divergence], eng_logprobs[divergence]
        in_topk = (ref_step.token_id in {t for t, _ in eng_step.top}
                   and eng_step.token_id in {t for t, _ in ref_step.top})
    return {
        "decode_len": len(ref_ids),
        "decode_common_prefix": common,
        "first_divergence": divergence,
        "decode_max": float(max(diffs)) if diffs else None,
        "decode_mean": float(np.mean(diffs)) if diffs else None,
        "divergence_in_topk": in_topk,
    }
