"""Everything between the logits and what the user receives, checked for what it claims.

Pure functions of an engine's output (and, for the text, a decode function): the ranks it returns run 1..k
with logprobs that do not increase, the actual token's rank agrees with its logprob and with the top-k; its
text is the reference tokenizer's decode of its ids under the request's detokenization options
(`text_matches_ids`, with the first differing character); and, under a request's stop rules, the output the
greedy reference makes under the same rules (its EOS-ignored answer cut where they end it) with its finish
reason, which the engine's must equal.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace

import numpy as np

from harness.core.schema import METRIC_INFO, EngineOutput, Finding, TokenLogprobs
from harness.engines.base import Stop
from harness.judging.compare.arrays import scored

TOLERANCE = 1e-6  # two copies of one logprob agree to float32 rounding
CONTEXT_TOKENS = 4  # prompt tokens an incremental detokenizer's first output text depends on
# The checks of what comes after the logits, by what they judge: a cell failing on these alone (and on the text
# overlap that follows its text) has logits that agree, so no stage inside the model can differ.
AFTER_LOGITS = {"logprob_ranks": "the returned logprobs and ranks", "text_matches_ids": "the detokenized text",
                "finish_reason": "where the output ends (the stop rules)",
                "processed_choice": "the processed distribution (penalties, temperature, top-k/top-p)",
                "sampled_allowed": "the sampler (temperature, top-k/top-p)",
                "returned_logprobs": "the returned logprobs (processed where raw were asked for)"}
FOLLOWS = tuple(name for name, info in METRIC_INFO.items() if info["follows"])  # what fails when answers part


def after_logits(failing: Iterable[Finding]) -> list[str]:
    """The after-the-logits checks a cell fails on, when those (and the text overlap) are all it fails on; []
    when something before them differs too, or nothing fails."""
    metrics = {f.metric for f in failing}
    own = sorted(metrics & set(AFTER_LOGITS))
    return own if own and metrics <= {*AFTER_LOGITS, *FOLLOWS} else []
Decode = Callable[[Sequence[int]], str]


def _rank_problem(step: TokenLogprobs) -> str | None:
    """What one position's returned ranks and logprobs get wrong, None when they hold."""
    if step.ranks and step.ranks != list(range(1, len(step.ranks) + 1)):
        return f"ranks {step.ranks} (expected 1..{len(step.ranks)})"
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
    (`harness.judging.compare.arrays`), so a 1,500-token prompt that holds costs no Python per position. Entries
    with ranks, and any whose numbers are not finite, are always looked at."""
    side = scored(entries)
    if not len(side):
        return []
    ranked = {i for i, e in enumerate(entries) if e is not None and (e.ranks or e.rank is not None)}
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
    flagged = side.present & (rising | wrong | above | odd)
    return sorted(ranked | set(np.nonzero(flagged)[0].tolist()))


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


def cut_at_stop(text: str, strings: Iterable[str]) -> tuple[str, bool]:
    """`text` up to the earliest stop string in it (engines return the text before it), and whether one was."""
    found = [at for s in strings if s and (at := text.find(s)) >= 0]
    return (text[:min(found)], True) if found else (text, False)


def under_stops(reference: EngineOutput, stop: Stop, eos_ids: frozenset[int], decode: Decode) -> EngineOutput:
    """The greedy reference's answer under the request's stop rules: its EOS-ignored tokens cut after the first
    EOS (when honoured) or stop token id (whose text is left out, as engines do), or after the token that
    completes a stop string (whose text then ends before it), finish reason "stop"; else all of them,
    "length". Greedy decisions do not depend on the rules, so this is what the reference's own generate makes
    under them."""
    ids = reference.output_ids
    for i, tid in enumerate(ids):
        if (not stop.ignore_eos and tid in eos_ids) or tid in stop.token_ids:
            return _cut(reference, i + 1, decode(ids[:i]))
        if stop.strings:
            text, hit = cut_at_stop(decode(ids[:i + 1]), stop.strings)
            if hit:
                return _cut(reference, i + 1, text)
    return replace(reference, output_text=decode(ids), finish_reason="length")


def _cut(reference: EngineOutput, length: int, text: str) -> EngineOutput:
    return replace(reference, output_ids=reference.output_ids[:length],
                   output_logprobs=reference.output_logprobs[:length], output_text=text, finish_reason="stop")


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
    out and cut before a stop string; None when it equals either."""
    ids = output.output_ids
    if ids and output.finish_reason == "stop" and ids[-1] in stop_ids:
        ids = ids[:-1]
    candidates = [decode(ids)]
    if decode_after is not None and output.prompt_ids:
        candidates.append(decode_after(output.prompt_ids[-CONTEXT_TOKENS:], ids))
    if stop.strings:
        candidates = [cut_at_stop(text, stop.strings)[0] for text in candidates]
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
