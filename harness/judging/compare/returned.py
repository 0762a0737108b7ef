"""Everything between the logits and what the user receives, checked for what it claims.

Pure functions of an engine's output (and, for the text, a decode function): the ranks it returns run 1..k
with logprobs that do not increase, the actual token's rank agrees with its logprob and with the top-k; its
text is the reference tokenizer's decode of its ids under the request's detokenization options
(`text_matches_ids`, with the first differing character); and, under a request's stop rules
(`harness.engines.stops`), the finish reason, which the engine's must equal the reference's.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import numpy as np

from harness.core.schema import METRIC_INFO, EngineOutput, Finding, Scores, TokenLogprobs
from harness.engines.base import Stop
from harness.engines.stops import Decode, cut_at_stop

TOLERANCE = 1e-6  # two copies of one logprob agree to float32 rounding
CONTEXT_TOKENS = 4  # prompt tokens an incremental detokenizer's first output text depends on
# The checks of what comes after the logits, by what they judge: a cell failing on these alone (and on the text
# overlap that follows its text) has logits that agree, so no stage inside the model can differ.
AFTER_LOGITS = {"logprob_ranks": "the returned logprobs and ranks", "text_matches_ids": "the detokenized text",
                "finish_reason": "where the output ends (the stop rules)",
                "processed_choice": "the processed distribution (logit bias, constraint, penalties, temperature, "
                                    "top-k/top-p)",
                "sampled_allowed": "the sampler (temperature, top-k/top-p)",
                "sampled_spread": "the sampler's distribution (temperature)",
                "returned_logprobs": "the returned logprobs (processed where raw were asked for)"}
FOLLOWS = tuple(name for name, info in METRIC_INFO.items() if info["follows"])  # what fails when answers part


def after_logits(failing: Iterable[Finding]) -> list[str]:
    """The after-the-logits checks a cell fails on, when those (and the text overlap) are all it fails on; []
    when something before them differs too, or nothing fails."""
    metrics = {f.metric for f in failing}
    own = sorted(metrics & set(AFTER_LOGITS))
    return own if own and metrics <= {*AFTER_LOGITS, *FOLLOWS} else []


def _rank_problem(step: TokenLogprobs) -> str | None:
    """What one position's returned ranks and logprobs get wrong, None when they hold."""
    if step.ranks and step.ranks != list(range(1, len(step.ranks) + 1)):
        return f"ranks {step.ranks} (expected 1..{len(step.ranks)})"
    if step.ranks and len(step.ranks) != len(step.top):
        return f"{len(step.ranks)} ranks for {len(step.top)} top-k entries"
    values = [lp for _, lp in step.top]
    if any(later > earlier + TOLERANCE for earlier, later in zip(values, values[1:])):
        return f"top logprobs increase along the ranks: {[round(v, 4) for v in values]}"
    ids = [tid for tid, _ in step.top]
    if step.token_id in ids:
        at = ids.index(step.token_id)
        if abs(values[at] - step.logprob) > TOLERANCE:
            return f"token {step.token_id} has logprob {step.logprob:.6g} but {values[at]:.6g} in the top-k"
        if step.rank is not None and step.ranks and step.ranks[at] != step.rank:
            return f"token {step.token_id} has rank {step.rank} but {step.ranks[at]} in the top-k"
    elif step.rank is not None and step.top and step.rank <= len(step.top):
        return f"token {step.token_id} claims rank {step.rank}, inside the top-{len(step.top)}, but is not in it"
    elif step.top and step.logprob > values[-1] + TOLERANCE:
        return f"token {step.token_id} is outside the top-{len(step.top)} but more likely than its last"
    return None


def _suspects(entries: Sequence[TokenLogprobs | None]) -> list[int]:
    """The positions `_rank_problem` must look at: a superset of those it finds wrong, from array arithmetic
    (`harness.core.scores.Scores`), so a 1,500-token prompt that holds costs no Python per position, returned
    ranks included. Entries whose numbers are not finite are always looked at."""
    side = Scores.of(entries)
    if not len(side):
        return []
    lps, width = side.top_lps, side.top_ids.shape[1]
    valid = np.arange(width)[None, :] < side.top_len[:, None]
    with np.errstate(invalid="ignore"):
        rising = (valid[:, 1:] & (lps[:, 1:] > lps[:, :-1] + TOLERANCE)).any(axis=1) if width > 1 else \
            np.zeros(len(side), dtype=bool)
        match = valid & (side.top_ids == side.token[:, None])
        at = match.argmax(axis=1) if width else np.zeros(len(side), dtype=np.int64)
        listed = match.any(axis=1)
        own = np.take_along_axis(lps, at[:, None], axis=1)[:, 0] if width else side.logprob
        last = np.take_along_axis(lps, np.maximum(side.top_len - 1, 0)[:, None], axis=1)[:, 0] if width else \
            side.logprob
        wrong = listed & (np.abs(own - side.logprob) > TOLERANCE)
        above = ~listed & (side.top_len > 0) & (side.logprob > last + TOLERANCE)
    odd = ~np.isfinite(side.logprob) | (valid & ~np.isfinite(lps)).any(axis=1)
    flagged = side.present & (rising | wrong | above | odd | _rank_suspects(side, listed, at))
    return np.nonzero(flagged)[0].tolist()


def _rank_suspects(side: Scores, listed: np.ndarray, at: np.ndarray) -> np.ndarray:
    """The positions whose returned ranks may not hold: not 1..k, fewer or more than the top-k, the token's own
    not the one beside it in the top-k, or inside the top-k for a token not in it."""
    n, out = len(side), np.zeros(len(side), dtype=bool)
    if side.ranks is not None:
        counts, width = side.rank_len, side.ranks.shape[1]
        given = np.arange(width)[None, :] < counts[:, None]
        out |= (given & (side.ranks != np.arange(1, width + 1)[None, :])).any(axis=1)
        out |= (counts > 0) & (counts != side.top_len)
    if side.rank is not None:
        has = ~np.isnan(side.rank)
        if side.ranks is not None and side.ranks.shape[1]:
            beside = side.ranks[np.arange(n), np.minimum(at, side.ranks.shape[1] - 1)]
            out |= has & listed & (side.rank_len > 0) & (beside != side.rank)
        out |= has & ~listed & (side.top_len > 0) & (side.rank <= side.top_len)
    return out


def rank_findings(output: EngineOutput, attempt: int | None = None) -> list[Finding]:
    """The returned top-k of every prompt and output position against what it claims (one finding naming the
    first position that breaks it and how many do)."""
    problems = [(f"{where} {i}", problem) for where, entries in (("prompt position", output.prompt_logprobs),
                                                                  ("output step", output.output_logprobs))
                for i in _suspects(entries) if (problem := _rank_problem(entries[i]))]  # type: ignore[arg-type]
    if not problems:
        return []
    where, problem = problems[0]
    return [Finding("logprob_ranks", "fail", float(len(problems)), rule="structural", against="itself",
                    attempt=output.attempt if attempt is None else attempt,
                    detail=f"{len(problems)} positions; first at {where}: {problem}")]


def char_diff(expected: str, actual: str, context: int = 16) -> str:
    """Where two texts first differ, with a little context of each."""
    at = next((i for i, (a, b) in enumerate(zip(expected, actual)) if a != b), min(len(expected), len(actual)))
    start = max(0, at - context)
    return (f"at character {at}: engine {actual[start:at + context]!r}, reference tokenizer "
            f"{expected[start:at + context]!r}")


def text_finding(output: EngineOutput, decode: Decode, stop: Stop, attempt: int | None = None,
                 decode_after: Callable[[Sequence[int], Sequence[int]], str] | None = None,
                 stop_ids: frozenset[int] = frozenset()) -> Finding | None:
    """The engine's text against the reference tokenizer's decode of its own ids, alone or after the prompt's
    last tokens (`decode_after`: how an incremental detokenizer decodes them), with a stop token it ended on left
    out and cut before a stop string (`harness.engines.stops`); None when it equals either."""
    ids = output.output_ids
    if ids and output.finish_reason == "stop" and ids[-1] in stop_ids:
        ids = ids[:-1]
    decoders: list[Decode] = [decode]
    if decode_after is not None and output.prompt_ids:
        context = output.prompt_ids[-CONTEXT_TOKENS:]
        decoders.append(lambda part: decode_after(context, part))
    # Under min_tokens a stop string counts only where it ends past the text of the first min_tokens tokens.
    candidates = [cut_at_stop(text(ids), stop.strings, len(text(ids[:stop.min_tokens])) if stop.min_tokens else 0)[0]
                  for text in decoders]
    if output.output_text in candidates:
        return None
    return Finding("text_matches_ids", "fail", rule="structural", against="the reference tokenizer",
                   attempt=output.attempt if attempt is None else attempt,
                   detail=char_diff(candidates[-1], output.output_text))


def choice_finding(expected: EngineOutput, actual: EngineOutput, bound: float, attempt: int = 0) -> Finding | None:
    """Where two greedy answers first part, when both sides' raw logprobs of both chosen tokens agree within
    `bound` and are not a near tie (they differ by more than `bound`): the logits agree and still the choice
    differs, so it was made after them (a penalty, a processor, the sampler). None where the answers agree, a
    token is missing from a side's top-k, or the logprobs disagree (a difference inside the model)."""
    at = next((i for i, (a, b) in enumerate(zip(expected.output_ids, actual.output_ids)) if a != b), None)
    if at is None or at >= min(len(expected.output_logprobs), len(actual.output_logprobs)):
        return None
    ref_step, eng_step = expected.output_logprobs[at], actual.output_logprobs[at]
    ref_top, eng_top = dict(ref_step.top), dict(eng_step.top)
    tokens = (expected.output_ids[at], actual.output_ids[at])
    if not all(t in ref_top and t in eng_top for t in tokens):
        return None
    if any(abs(ref_top[t] - eng_top[t]) > bound for t in tokens) or abs(ref_top[tokens[0]] - ref_top[tokens[1]]) \
            <= bound:
        return None
    a, b = tokens
    return Finding("processed_choice", "fail", rule="structural", attempt=attempt, bound=bound,
                   detail=f"at output step {at} both sides' raw logprobs agree (token {a}: {ref_top[a]:.4g} and "
                          f"{eng_top[a]:.4g}; token {b}: {ref_top[b]:.4g} and {eng_top[b]:.4g}), yet the reference "
                          f"chose {a} and the engine {b}: the choice was made after the logits")


def finish_finding(expected: EngineOutput, actual: EngineOutput, attempt: int = 0) -> Finding | None:
    """The finish reason the stop rules give against the engine's, where the engine says one."""
    if not actual.finish_reason or actual.finish_reason == expected.finish_reason:
        return None
    return Finding("finish_reason", "fail", rule="structural", attempt=attempt,
                   detail=f"the engine finished by {actual.finish_reason!r} after {len(actual.output_ids)} tokens; "
                          f"the stop rules end the reference's answer by {expected.finish_reason!r} after "
                          f"{len(expected.output_ids)}")
