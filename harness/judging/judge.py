"""Judging: one case's outputs on every variant -> its CaseResult.

Each variant is compared with what its plan entry names (the reference, the
engine's base variant, or both), repeated attempts with the first attempt,
every comparison judged relative to the case's floor (the reference's own
error in the variant's dtype), and the case's verdict is the worst of its
variants'. Every answer is also held to what it claims (ranks, its text against the reference tokenizer:
`harness.judging.compare.returned`), and a variant's stop rules and detokenization options apply to what it is
compared with. What fails or drifts is a Finding record, what else the judge says
(an engine error, a warning, what a variant was compared with) a Note record;
text is rendered from both at the edges (`harness.judging.explain`).
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from harness import config
from harness.core.notes import error_fields, note, note_text
from harness.core.schema import (
    CaseComparison,
    CaseResult,
    EngineOutput,
    Finding,
    Floor,
    Note,
    VariantResult,
    worst,
)
from harness.engines.base import Detokenize, Stop
from harness.engines.stops import stop_ids, under_stops, with_tokens
from harness.inputs.cases import Case
from harness.inputs.detokenize import Detokenizer
from harness.judging.compare import compare_outputs, judge
from harness.judging.compare.floor import case_floors, floor_key
from harness.judging.compare.returned import (
    choice_finding,
    finish_finding,
    rank_findings,
    text_finding,
)
from harness.judging.compare.sampled import processed_finding, slack, spread_finding, support_finding
from harness.judging.compare.sensitivity import image_sensitivity
from harness.run.known import KnownFailure, mark_known
from harness.run.ledger import REFERENCE
from harness.run.plan import RunPlan
from harness.run.variants import Variant, reference_key, scored_name


@dataclass
class CaseInputs:
    """What one case's judging receives: its outputs (the ledger's entry for it) and what the stages before
    judging computed for it (pixel deltas of the decoders its variants use, thumbnails)."""

    case: Case
    prompt: str
    reference: EngineOutput | None
    outputs: Mapping[str, list[EngineOutput]]  # engine outputs by variant, attempts in order
    extra: Mapping[str, EngineOutput] = dataclasses.field(default_factory=dict)  # the reference's other requests
    skipped: Mapping[str, str] = dataclasses.field(default_factory=dict)  # variant -> why it did not run
    missing: Mapping[str, str] = dataclasses.field(default_factory=dict)  # variant -> why its outputs never came
    details: Mapping[str, dict[str, Any]] = dataclasses.field(default_factory=dict)  # what the plan recorded
    stored_floors: Mapping[str, Floor] | None = None  # a stored reference's floors by engine dtype
    pixel_deltas: Mapping[str, list[dict[str, Any]]] = dataclasses.field(default_factory=dict)  # by decoder
    thumbnails: list[str] = dataclasses.field(default_factory=list)


@dataclass
class Judge:
    """Everything judging needs that is fixed for the run: the plan (thresholds, dtypes, the base variant,
    known failures, floor runs, what the engine cannot supply) and the prompt's media tokens and texts."""

    plan: RunPlan
    image_token: int | None
    video_token: int | None
    token_texts: Callable[[list[EngineOutput]], dict[str, str]]  # the processor's, or a stored reference's table
    detokenizer: Detokenizer | None = None  # the reference tokenizer: output text and stop strings are judged by it

    @property
    def thresholds_config(self) -> dict[str, Any]:
        return self.plan.thresholds

    @property
    def engine_dtype(self) -> str:
        return self.plan.engine.dtype

    @property
    def reference_dtype(self) -> str:
        return self.plan.reference.dtype

    @property
    def model(self) -> str:
        return self.plan.engine.model

    @property
    def base(self) -> str:
        return self.plan.base

    @property
    def unavailable(self) -> Mapping[str, str]:
        """Output fields the engine cannot supply -> reason."""
        return self.plan.engine.capabilities.unavailable()

    @property
    def known(self) -> Sequence[KnownFailure]:
        return self.plan.known

    @property
    def floor_runs(self) -> Mapping[str, Mapping[str, dict[str, Any]]]:
        """Engine dtype -> the floor runs measured for it (`harness.run.plan.floor_runs`)."""
        return self.plan.floors

    @property
    def no_floor(self) -> str | None:
        """Why there are no floors (a reference engine that cannot recompute with overrides)."""
        return self.plan.no_floor

    def __call__(self, got: CaseInputs, variants: Sequence[Variant]) -> CaseResult:
        """The case on every variant. The reference's other outputs (`got.extra`) are by request variant:
        `flat-grey` (the image-sensitivity check), `reference-<decoder>` (images decoded by another decoder,
        for variants that ask) and `floor-*` (the floor runs)."""
        case, reference, extra = got.case, got.reference, got.extra
        result = case_result(case, got.prompt, "error", thumbnails=got.thumbnails)
        result.reference = reference
        if reference is not None and not reference.error:
            result.checks, result.notes = self._reference_checks(reference, extra.get("flat-grey"))
        floors = self.floors(reference, extra, got.stored_floors)
        result.floor = floors.get(self.engine_dtype)
        try:
            result.thresholds = self._thresholds(case, None).values
        except ValueError as exc:
            result.notes.append(note("invalid_thresholds", source=str(case.source), case=case.id, message=str(exc)))
            return result
        base_output = (got.outputs.get(self.base) or [None])[0]
        scored = {v.name for v in self.plan.scored}
        for variant in variants:
            try:
                own = extra.get(reference_key(variant), reference)
                details = dict(got.details.get(variant.name, {}))
                decoder = variant.request.get("decoder")
                if decoder and decoder != "pil":
                    details.update(decoder=decoder, pixel_deltas=got.pixel_deltas.get(decoder, []))
                floor = _floor_of(floors, variant, self.plan.dtype_of(variant))
                keys = [scored_name(variant.name, i) for i in range(variant.answers)] if variant.name in scored else []
                scores = [extra.get(k) or got.missing.get(k) or note("no_output") for k in keys]
                cell = self._variant(case, own, variant, got.outputs.get(variant.name, []),
                                     got.skipped.get(variant.name), base_output, got.missing.get(variant.name),
                                     details, got.skipped.get(self.base), floor, scores)
                result.variants[variant.name] = mark_known(case, cell, self.known)
            except Exception as exc:  # a harness bug on one variant must not end the run
                result.variants[variant.name] = VariantResult(variant.name, "error", notes=[
                    note("harness_error", type=type(exc).__name__, message=str(exc))])
        ran = [n for n, v in result.variants.items() if v.verdict != "skipped"]
        result.headline = self.base if self.base in ran else (ran[0] if ran else None)
        result.verdict = worst(v.verdict for v in result.variants.values())
        shown = {REFERENCE, "flat-grey", *(reference_key(v) for v in variants)}  # the re-runs this run compares with
        every = [o for name, o in [(REFERENCE, reference), *extra.items()] if o and name in shown]
        every += [o for v in result.variants.values() for o in ([v.engine] if v.engine else []) + v.attempts]
        result.tokens = self.token_texts(every)
        return result

    def floors(self, reference: EngineOutput | None, extra: Mapping[str, EngineOutput],
               stored: Mapping[str, Floor] | None) -> dict[str, Floor]:
        """The case's floors per engine dtype (and per re-run, `harness.judging.compare.floor.case_floors`): recorded
        with a stored reference, else measured from this run's floor runs; a dtype with neither has a floor
        that says why it is unavailable."""
        floors: dict[str, Floor] = {}
        for dtype, runs in self.floor_runs.items():
            if stored and dtype in stored:
                floors.update({k: f for k, f in stored.items() if k.split("|")[0] == dtype})
            elif self.no_floor:
                floors[dtype] = Floor(dict(runs), unavailable=self.no_floor)
            elif reference is None or reference.error:
                floors[dtype] = Floor(dict(runs), unavailable="no reference output")
            else:
                floors.update(case_floors(reference, extra, {dtype: runs}, self.image_token))
        return floors

    def _reference_checks(self, reference: EngineOutput,
                          grey: EngineOutput | None) -> tuple[dict[str, Any], list[Note]]:
        """The reference against itself, and the case against a grey image: warnings, not failures."""
        limits = config.resolve_section(self.thresholds_config, "reference")
        checks: dict[str, Any] = dict(reference.diagnostics)
        warnings = []
        own = checks.get("self_consistency_max")
        if own is not None and not own <= limits["self_consistency_max"]:
            warnings.append(note("reference_inconsistent", value=own, bound=limits["self_consistency_max"]))
        if grey is not None and not grey.error:
            found = image_sensitivity(reference, grey, (self.image_token, self.video_token))
            checks.update(image_sensitivity_max=found["after_image_max"], grey_output_changed=found["output_changed"])
            moved = found["after_image_max"]
            if not found["output_changed"] and (moved is None or moved < limits["image_sensitivity_min"]):
                warnings.append(note("not_image_sensitive", moved=moved, bound=limits["image_sensitivity_min"]))
        return checks, warnings

    def _thresholds(self, case: Case, variant: Variant | None) -> config.Thresholds:
        engine_dtype = self.plan.dtype_of(variant) if variant else self.engine_dtype
        key = config.effective_dtype(engine_dtype, self.reference_dtype)
        return config.resolve(self.thresholds_config, key, self.model, case.thresholds)

    def _variant(self, case: Case, reference: EngineOutput | None, variant: Variant, attempts: list[EngineOutput],
                 skipped: str | None, base_output: EngineOutput | None, missing: Note | None,
                 details: dict[str, Any], base_skipped: str | None, floor: Floor | None,
                 scores: Sequence[EngineOutput | Note] = ()) -> VariantResult:
        """One cell; `scores` are the reference's scorings of a sampled variant's answers (or why one is
        missing), in `answers` order."""
        name = variant.name
        if skipped:
            return VariantResult(name, "skipped", [skipped])
        notes = ([note("rerun_reference", reference=reference.variant)]
                 if reference is not None and reference.variant != "reference" else [])
        rerun = bool(notes)
        if not attempts:
            return VariantResult(name, "error", details=details, notes=[*notes, missing or note("no_output")])
        first, rest = attempts[0], attempts[1:]
        failed = [a for a in attempts if a.error]
        if failed:
            notes += [note("engine_error", attempt=a.attempt, **error_fields(a.error or "")) for a in failed]
            return VariantResult(name, "error", engine=first, attempts=rest, details=details, notes=notes)
        th = self._thresholds(case, variant)
        findings = [f for a in attempts for f in sane(a)] + self._returned(attempts, variant)
        cmp = against_base = None
        if "reference" in variant.against:
            if reference is None or reference.error:
                return VariantResult(name, "error", engine=first, attempts=rest, details=details,
                                     notes=[*notes, note("no_reference_output")])
            reference = self._as_requested(reference, variant)
            stop = variant.request.get("stop")
            if stop is not None and self.detokenizer is not None:  # the reference's answer under the same rules
                stop = with_tokens(stop, self.detokenizer.tokenizer)
                reference = under_stops(reference, stop, self.detokenizer.eos_ids, self._decoder(variant))
                findings += [f for a in attempts if (f := finish_finding(reference, a, a.attempt))]
            cmp, found = self._compare(reference, first, variant, th, floor, "reference")
            findings += found + self._choice(reference, first, variant, cmp)
            for a in rest:
                findings += self._compare(reference, a, variant, th, floor, "reference", a.attempt)[1]
            greedy_children = [] if variant.sampled else children(first)  # sampled ones are scored, below
            for i, child in enumerate(greedy_children, 1):  # n > 1: every greedy answer is held to the reference
                findings += self._compare(reference, child, variant, th, floor, "child", i, ("decode",))[1]
        if "base" in variant.against and variant.name != self.base and base_skipped:
            notes.append(note("base_skipped", base=self.base, reason=base_skipped))
        elif "base" in variant.against and variant.name != self.base and rerun:
            notes.append(note("base_other_pixels", base=self.base))
        elif "base" in variant.against and variant.name != self.base:
            if base_output is None or base_output.error:
                findings.append(Finding("base_output", "fail", rule="structural", against="base",
                                        detail=f"the base variant {self.base} has no output to compare with"))
            else:
                against_base, found = self._compare(self._as_requested(base_output, variant), first, variant, th,
                                                    floor, "base")
                findings += found
        for a in rest:  # repeated submissions must agree with the first
            findings += self._compare(first, a, variant, th, floor, "attempt", a.attempt, ("prefill", "decode"))[1]
        steps, bound, pooled = [], 0.0, set()  # the cell's scored draws, the widest bound they were judged with
        for i, (answer, score) in enumerate(zip(answers(attempts), scores)):  # sampled: each answer scored
            if isinstance(score, Note) or score.error:
                notes.append(note("not_scored", answer=i + 1, why=score.error if isinstance(score, EngineOutput)
                                  else note_text(score)))
                continue
            found, answer_bound = self._scored(score, answer, variant, th, floor, i)
            findings += found
            if tuple(answer.output_ids) not in pooled:  # a repeat under the same seed is the same draws, once
                pooled.add(tuple(answer.output_ids))
                steps += score.processed
            bound = max(bound, answer_bound)
        if steps and (spread := spread_finding(steps, variant.request["sampling"], bound)):
            findings.append(spread)
        if any(a.diagnostics.get("warmup_rejected") == 0.0 for a in attempts):
            findings.append(Finding("warmup_rejected", "fail", rule="structural", detail=(
                "the over-long request sent first was accepted: the engine did not enforce its maximum length")))
        if variant.expect.get("cache_hit") and not any(a.diagnostics.get("cached_tokens") for a in attempts):
            notes.append(note("cache_not_hit"))
        verdict = "fail" if any(f.level == "fail" for f in findings) else "pass"
        if verdict == "fail" and variant.request.get("prompt_form") == "native":
            notes.append(note("native_stage", stage=native_stage(cmp or against_base)))
        return VariantResult(name, verdict, [], cmp, against_base, first, rest, details, findings, notes=notes)

    def _scored(self, score: EngineOutput, answer: EngineOutput, variant: Variant, th: config.Thresholds,
                floor: Floor | None, i: int) -> tuple[list[Finding], float]:
        """A sampled answer against the reference's scoring of its tokens (`harness.judging.compare.sampled`):
        its returned logprobs by the floor rule as a greedy answer's (or, where they are the processed ones,
        that), and every token inside the allowed set the request's sampling makes; and the raw logprob bound
        it was judged with."""
        cmp, found = self._compare(score, answer, variant, th, floor, "scored", i, ("decode",))
        check = cmp.checks.get("decode_max")
        bound = check.bound if check is not None and check.bound is not None else 0.0
        sampling = variant.request["sampling"]
        if any(f.level == "fail" for f in found):
            returned = processed_finding(score.processed, [s.logprob for s in answer.output_logprobs],
                                         [s.logprob for s in score.output_logprobs], slack(bound, sampling), i)
            found = [returned] if returned else found  # the comparison was with the raw ones: it explains them
        drawn = support_finding(score.processed, sampling, bound, i)
        return found + ([drawn] if drawn else []), bound

    @staticmethod
    def _choice(reference: EngineOutput, answer: EngineOutput, variant: Variant, cmp: CaseComparison) -> list[Finding]:
        """A greedy answer that parts from the reference's although the logits agree at that step (within the
        decode bound): the choice was made after the logits (`harness.judging.compare.returned.choice_finding`)."""
        parted = cmp.checks.get("first_divergence")
        if variant.request.get("sampling") is not None or parted is None or parted.level != "fail":
            return []
        bound = cmp.checks.get("decode_max")  # the logprob bound at the greedy steps
        if bound is None or bound.bound is None:
            return []
        finding = choice_finding(reference, answer, bound.bound, answer.attempt)
        return [finding] if finding else []

    def _as_requested(self, output: EngineOutput, variant: Variant) -> EngineOutput:
        """An output compared with a variant that detokenizes otherwise: its text as those options make it (the
        reference and the base variant were detokenized the default way)."""
        if variant.request.get("detokenize") is None or self.detokenizer is None:
            return output
        return dataclasses.replace(output, output_text=self._decoder(variant)(output.output_ids))

    def _decoder(self, variant: Variant) -> Callable[[Sequence[int]], str]:
        """The reference tokenizer's decode with the variant's detokenization options."""
        options = variant.request.get("detokenize") or Detokenize()
        assert self.detokenizer is not None
        return lambda ids: self.detokenizer.decode(ids, options.skip_special_tokens,
                                                   options.spaces_between_special_tokens)

    def _returned(self, attempts: Sequence[EngineOutput], variant: Variant) -> list[Finding]:
        """What every answer returns, checked for what it claims: its ranks and, where the engine detokenizes
        itself, its text against the reference tokenizer's decode of its ids (`harness.judging.compare.returned`)."""
        answers = [(a, a.attempt) for a in attempts] + [(c, i) for i, c in enumerate(children(attempts[0]), 1)]
        found = [f for answer, at in answers for f in rank_findings(answer, at)]
        if self.detokenizer is not None and self.plan.engine.capabilities.engine_text:
            decode = self._decoder(variant)
            stop = with_tokens(variant.request.get("stop") or Stop(), self.detokenizer.tokenizer)
            options = variant.request.get("detokenize") or Detokenize()
            detokenizer = self.detokenizer

            def decode_after(context: Sequence[int], ids: Sequence[int]) -> str:
                return detokenizer.decode_after(context, ids, options.skip_special_tokens,
                                                options.spaces_between_special_tokens)

            ending = stop_ids(stop, detokenizer.eos_ids)
            found += [f for answer, at in answers
                      if (f := text_finding(answer, decode, stop, at, decode_after, ending))]
        return found

    def _compare(self, expected: EngineOutput, actual: EngineOutput, variant: Variant, th: config.Thresholds,
                 floor: Floor | None, against: str, attempt: int = 0,
                 checks: Sequence[str] | None = None) -> tuple[CaseComparison, list[Finding]]:
        cmp = compare_outputs(expected, actual, self.image_token, self.unavailable, checks or variant.checks)
        return cmp, judge(cmp, th, floor, against, attempt)


def native_stage(cmp: CaseComparison | None) -> str:
    """Where a native-form disagreement starts: the engine's "template" (ids differ), its image "decoding"
    (ids agree, logprobs at image positions differ), or "after_rendering"."""
    if cmp is not None and cmp.prompt_ids_match is False:
        return "template"
    if cmp is not None and cmp.image_positions:
        return "decoding"
    return "after_rendering"


def answers(attempts: Sequence[EngineOutput]) -> list[EngineOutput]:
    """A variant's answers in order (`Variant.answers`): each attempt, then the other n - 1 of the first."""
    return [*attempts, *children(attempts[0])] if attempts else []


def children(output: EngineOutput) -> list[EngineOutput]:
    """The other answers of an n > 1 request as outputs of their own (the same prompt and its logprobs)."""
    return [dataclasses.replace(output, output_ids=c.output_ids, output_logprobs=c.output_logprobs,
                                output_text=c.output_text, finish_reason=c.finish_reason, completions=[])
            for c in output.completions]


def sane(output: EngineOutput) -> list[Finding]:
    """What no engine may return whatever the path: non-finite logprobs, negative token ids."""
    problems = []
    prompt = output.prompt_logprobs
    bad = ["prompt"] * int((prompt.present & ~np.isfinite(prompt.logprob)).sum())
    bad += ["output" for p in output.output_logprobs if not math.isfinite(p.logprob)]
    if bad:
        problems.append(Finding("non_finite", "fail", float(len(bad)), rule="structural", attempt=output.attempt,
                                detail=f"{len(bad)} non-finite logprobs ({', '.join(sorted(set(bad)))})"))
    if any(t < 0 for t in output.output_ids):
        problems.append(Finding("negative_ids", "fail", rule="structural", attempt=output.attempt,
                                detail="negative output token ids"))
    return problems


def _floor_of(floors: Mapping[str, Floor], variant: Variant, dtype: str) -> Floor | None:
    """The floor a variant is judged with: that of the reference output it is compared with (a re-run's
    own where it has one), in its engine dtype `dtype`."""
    return floors.get(floor_key(dtype, reference_key(variant))) or floors.get(floor_key(dtype))


def case_result(case: Case, prompt_text: str, verdict: str, notes: list[Note] | None = None,
                thumbnails: list[str] | None = None) -> CaseResult:
    return CaseResult(case_id=case.id, verdict=verdict, notes=list(notes or []), source=str(case.source),
                      tags=list(case.tags), images=[str(p) for p in case.images],
                      videos=[str(frames[0].parent) for frames in case.videos], messages=list(case.messages),
                      prompt_text=prompt_text, thumbnails=list(thumbnails or []))
