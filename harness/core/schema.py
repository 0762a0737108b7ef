"""The one result schema shared by every engine, comparator and report.

Engines produce `EngineOutput`; comparators turn two of them into a
`CaseComparison`; each variant of a case (a path through the engine) is a
`VariantResult`; a case with all its variants is a `CaseResult`; a run is a
`RunResult`. Everything is plain data that round-trips through JSON with one
generic (de)serializer derived from the dataclass fields, so a report can be
re-rendered from `results.json` with no engine installed.
"""
from __future__ import annotations

import dataclasses
import sys
import types
import typing
from dataclasses import asdict, dataclass, field, fields
from typing import Any, TypeVar

from harness.core.provenance import Provenance
from harness.core.scores import Scores, TokenLogprobs

# 4: notes as records (warnings, errors, known failures), details measured data only; 5: per-position data in the
# columnar store beside the results (`harness.publish.positions`), not in results.json
SCHEMA_VERSION = 5

# A case's verdict is the worst of its variants' verdicts; "skipped" (a variant
# the engine or machine cannot run) never outranks a verdict that was reached;
# "known" is a failure on record (harness/config/known_failures.yaml): shown, not hidden.
VERDICTS = ("pass", "known", "fail", "error", "skipped")
PASSING = ("pass", "known")
_SEVERITY = {"skipped": 0, "pass": 1, "known": 2, "fail": 3, "error": 4}


def worst(verdicts: typing.Iterable[str]) -> str:
    """The most severe verdict: error > fail > known > pass > skipped (skipped only if nothing else ran)."""
    return max(verdicts, key=_SEVERITY.__getitem__, default="skipped")


# The output fields an engine may be unable to supply (`Capabilities.unavailable`); a metric
# that needs one of them is `unavailable` for that engine, never computed from empty data.
OUTPUT_FIELDS = ("prompt_ids", "prompt_logprobs", "top_k", "output_ids", "output_logprobs")
PROMPT = ("prompt_ids", "prompt_logprobs")
GREEDY = ("output_ids",)
SECTIONS = ("prompt", "prefill", "distribution", "decode", "text")


# How a metric is judged (`harness.judging.compare.verdict`); the rule also decides which thresholds keys it takes
# (`harness.config.threshold_keys`): `name` bounds a lower-is-better metric from above, `name_min` a
# higher-is-better one from below.
RULES = {
    "floor": "error <= k x floor + atol (k^order for a higher-order metric), capped by the absolute bound; "
             "keys: the bound and `name_atol`, and optionally its own `name_k` and `name_k_warn`",
    "info": "shown with its floor and ratio to it, never failing; no keys",
    "bound": "the absolute bound alone (a discrete metric: a flip moves it by steps, not by noise); key: the bound",
    "greedy": "greedy outputs agree by the `greedy` threshold: `exact`, or `topk` (a divergence passes where both "
              "tokens are in each other's top-k)",
    "aligned": "false fails structurally: no number is compared on misaligned positions",
    "shown": "computed and shown, never judged on its own",
}
# Where a metric is shown besides every metric table (the variant's metric table, the flat CSV).
VIEWS = {
    "table": "the report's grid of cases and the CI step summary",
    "decode_effect": "the decode-path effect table (PIL's pixels against another decoder's)",
    "floor": "the case's floor line in the report, and the run's largest floors in the history",
}


def metric(better: str, label: str, section: str, needs: tuple[str, ...] = (), *, rule: str, floor: bool = False,
           pooled: str | None = None, shown: tuple[str, ...] = (), history: bool = False, unit: str = "",
           order: int = 1, follows: bool = False) -> Any:
    """A CaseComparison field that is a metric: the one place its name, direction, rules and use are declared.

    `better` is "lower" or "higher"; `section` groups it in reports ("prefill", "distribution",
    "decode", ...) and names the comparison that computes it; `needs` the output fields it is computed
    from; `rule` how it is judged (RULES); `floor` whether the case's floor runs measure it, `pooled` another
    metric whose floor it shares when its own sample is small (16 greedy steps are a noisier floor than a
    prompt's positions computed by the same arithmetic); `shown` the views that show it (VIEWS); `history`
    whether the nightly history keeps its worst value over a run's cases (the max of a lower-is-better metric,
    the min of a higher-is-better one); `unit` what a value is; `order` how it grows with a logprob
    difference (KL divergence is second order, ~ sum p d^2 / 2: an engine k times as far off as the floor has
    k^2 times its KL, so its floor multiple is k^order); `follows` whether it fails whenever two answers part,
    whatever made them (the divergence, the text overlap): never a cause of its own."""
    assert better in ("lower", "higher") and section in SECTIONS and set(needs) <= set(OUTPUT_FIELDS)
    assert rule in RULES and set(shown) <= set(VIEWS) and (floor or (rule not in ("floor", "info") and not pooled))
    headline = ("max" if better == "lower" else "min") if history else None
    return field(default=None, metadata={"metric": True, "better": better, "label": label, "section": section,
                                         "needs": needs, "rule": rule, "floor": floor, "pooled": pooled,
                                         "shown": shown, "headline": headline, "unit": unit, "order": order,
                                         "follows": follows})


@dataclass
class Finding:
    """One judged metric of one comparison, as data: the reason text is rendered from it at the edges.

    `level` is "pass", "drift" (above `k_warn` x floor, below the failure bound: a warning tracked
    nightly) or "fail". `rule` says what decided: "floor" (`value <= k * floor + atol`, capped by the
    ceiling), "ceiling" (the absolute bound, where it is tighter than the floor rule or no floor exists),
    "exact"/"topk" (greedy agreement), "min"/"max" (an absolute bound alone, such as ROUGE-L's), "info" (an
    informative metric: never fails), or "structural" (token ids or logprobs missing or misaligned: no
    number can pass); the metric's declared rule (RULES) says which apply. `ratio` is the error over the floor (for a
    higher-is-better metric, its shortfall from 1 over the floor's); `against` is what the output was
    compared with ("reference", "base" or "attempt"), `attempt` which submission of the request
    (0-based). `detail` holds what a number cannot say (prompt lengths, the divergence position).
    """

    metric: str
    level: str = "pass"  # the default, so most of a large run's checks do not spell it out
    value: float | None = None
    bound: float | None = None
    floor: float | None = None
    ratio: float | None = None
    rule: str = "floor"
    against: str = "reference"
    attempt: int = 0
    detail: str = ""
    k: float | None = None


LEVELS = ("pass", "drift", "fail")

# How much a note weighs: "error" says why a result is an error (an engine's exception, a reference that
# never came), "warning" what makes a result less telling than it looks, "info" what it was compared with.
NOTE_LEVELS = ("info", "warning", "error")


@dataclass
class Note:
    """What a run, case or variant says besides its findings, as data: `kind` names the note
    (`harness.core.notes.NOTES` declares each kind, its level and its text), `data` holds its values
    (an engine error's exception type and message, the variant a warning is about). Made with
    `harness.core.notes.note`, rendered with `harness.core.notes.note_text`: never text in the results."""

    kind: str
    level: str
    data: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.level not in NOTE_LEVELS:
            raise ValueError(f"note {self.kind!r}: level must be one of {NOTE_LEVELS}, got {self.level!r}")


@dataclass
class Floor:
    """The reference's own error on one case: how far a healthy engine may be from it.

    The reference recomputed in legitimate other ways (`runs`: run name -> what changed, e.g. the
    engine's dtype, another attention kernel, float64) and compared with itself exactly as the engine
    is; per metric the worst over the runs. `diffs` is the per-prompt-position worst |difference|, for
    the report's chart. `source` is "live" (measured in this run) or where a stored one was recorded;
    `unavailable` says why a case has no floor (its metrics then fall back to the ceilings).
    """

    runs: dict[str, dict[str, Any]] = field(default_factory=dict)
    metrics: dict[str, float | None] = field(default_factory=dict)
    diffs: list[float | None] = field(default_factory=list)
    source: str = "live"
    unavailable: str | None = None


@dataclass
class ProcessedStep:
    """The distribution an engine samples from at one output step, as the reference computes it over the
    engine's own tokens (`harness.judging.compare.sampled`): the raw logits with the request's penalties, divided
    by its temperature, as logprobs `q`. `logprob` is the sampled token's, `rank` its place (1: the likeliest),
    `above` the probability of the tokens more likely than it, `top_k_mass` that of the top-k (1 without a
    top-k), so the mass top-p sees before it is `above / top_k_mass`; `kept` is the probability of the tokens
    top-k and top-p keep (what the processed logprobs are renormalized by); `kth` the k-th token's logprob
    (None without a top-k). `position` is where the token lies in the distribution the sampler draws from (the
    kept tokens renormalized, likeliest first): the probability before it plus half its own, None where it is
    not kept; a correct sampler's positions average 1/2, each with the variance `spread` (the kept
    distribution's own), whatever the distribution (`harness.judging.compare.sampled.spread_finding`)."""

    token_id: int
    logprob: float
    rank: int
    above: float
    top_k_mass: float = 1.0
    kept: float = 1.0
    kth: float | None = None
    position: float | None = None
    spread: float = 0.0


@dataclass
class Completion:
    """One more answer to the same request (n > 1: the second child onwards); the first is the output's own."""

    output_ids: list[int] = field(default_factory=list)
    output_logprobs: list[TokenLogprobs] = field(default_factory=list)
    output_text: str = ""
    finish_reason: str = ""


@dataclass
class EngineOutput:
    """What any engine computed for one case on one variant.

    `prompt_logprobs[i]` scores `prompt_ids[i]` given the tokens before it;
    position 0 has nothing before it and is None. `attempt` counts repeated
    submissions of the same request (repeat and sampling variants).
    """

    case_id: str
    engine: str
    variant: str = ""
    attempt: int = 0
    prompt_ids: list[int] = field(default_factory=list)
    prompt_logprobs: Scores = field(default_factory=Scores)  # a list of entries given or assigned: made columns
    output_ids: list[int] = field(default_factory=list)
    output_logprobs: list[TokenLogprobs] = field(default_factory=list)
    output_text: str = ""
    # Why generation ended, as the engine says it: "stop" (EOS, a stop string or token), "length", or "" where the
    # engine does not say; `completions` are the other answers of an n > 1 request.
    finish_reason: str = ""
    completions: list[Completion] = field(default_factory=list)
    # The reference scoring another engine's sampled tokens (a `forced` request): each step's processed distribution.
    processed: list[ProcessedStep] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    # What a side says about itself (the reference: its forward pass vs its generate()).
    diagnostics: dict[str, float] = field(default_factory=dict)
    error: str | None = None

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "prompt_logprobs" and not isinstance(value, Scores):  # given or assigned, always columns
            value = Scores.of(value)
        object.__setattr__(self, name, value)

    @classmethod
    def failed(cls, case_id: str, engine: str, error: str, variant: str = "", attempt: int = 0) -> EngineOutput:
        return cls(case_id=case_id, engine=engine, variant=variant, attempt=attempt, error=error)


@dataclass
class CaseComparison:
    """Every metric (docs/design.md) for one pair of outputs; None where it cannot be computed.

    A metric one side cannot supply (an engine that returns no prompt
    logprobs) is listed in `unavailable` with the reason: it is neither a
    pass nor zero, and a gate that needs it cannot decide.
    """

    prompt_ids_match: bool | None = metric("higher", "prompt ids match", "prompt", ("prompt_ids",), rule="aligned")
    prompt_len_reference: int = 0
    prompt_len_engine: int = 0
    image_positions: int = 0
    prefill_max: float | None = metric("lower", "prefill max", "prefill", PROMPT, rule="floor", floor=True,
                                       shown=("table", "decode_effect", "floor"), history=True, unit="logprob")
    prefill_mean: float | None = metric("lower", "prefill mean", "prefill", PROMPT, rule="floor", floor=True,
                                        shown=("table", "decode_effect", "floor"), history=True, unit="logprob")
    prefill_p99: float | None = metric("lower", "prefill p99", "prefill", PROMPT, rule="floor", floor=True,
                                       unit="logprob")
    prefill_max_image: float | None = metric("lower", "prefill max (image)", "prefill", PROMPT, rule="info",
                                             floor=True, unit="logprob")
    prefill_max_text: float | None = metric("lower", "prefill max (text)", "prefill", PROMPT, rule="info",
                                            floor=True, unit="logprob")
    prefill_topk_overlap: float | None = metric("higher", "top-k overlap", "prefill", (*PROMPT, "top_k"),
                                                rule="floor", floor=True, unit="fraction")
    # Per prompt position |engine - reference| (None at position 0) and whether
    # that position is inside an image placeholder span: the report charts these.
    prefill_diffs: list[float | None] = field(default_factory=list)
    image_mask: list[bool] = field(default_factory=list)
    # The next-token distribution at each prompt position (llama.cpp's --kl-divergence statistics):
    # KL(reference || engine) over the reference's top-k plus one bucket for the rest of the mass.
    kl_mean: float | None = metric("lower", "KL mean", "distribution", (*PROMPT, "top_k"), rule="floor", floor=True,
                                   shown=("table", "floor"), history=True, unit="nats", order=2)
    kl_p99: float | None = metric("lower", "KL p99", "distribution", (*PROMPT, "top_k"), rule="info", floor=True,
                                  unit="nats", order=2)
    kl_max: float | None = metric("lower", "KL max", "distribution", (*PROMPT, "top_k"), rule="floor", floor=True,
                                  unit="nats", order=2)
    same_top1: float | None = metric("higher", "same top-1", "distribution", (*PROMPT, "top_k"), rule="floor",
                                     floor=True, shown=("table",), history=True, unit="fraction")
    same_top1_se: float | None = None  # its standard error, sqrt(p (1 - p) / (n - 1))
    delta_p_rms: float | None = metric("lower", "delta-p RMS", "distribution", PROMPT, rule="info", floor=True,
                                       unit="probability")
    delta_p_max: float | None = metric("lower", "delta-p max", "distribution", PROMPT, rule="info", floor=True,
                                       unit="probability")
    decode_len: int = 0
    # The floor runs' own greedy agreement is kept with the floor (the reference recomputed diverges too).
    decode_common_prefix: int | None = metric("higher", "common prefix", "decode", GREEDY, rule="shown", floor=True,
                                              unit="tokens")
    first_divergence: int | None = metric("higher", "first divergence", "decode", GREEDY, rule="greedy", floor=True,
                                          unit="token", follows=True)
    decode_max: float | None = metric("lower", "decode max", "decode", (*GREEDY, "output_logprobs"), rule="floor",
                                      floor=True, pooled="prefill_max", shown=("table", "decode_effect"),
                                      history=True, unit="logprob")
    decode_mean: float | None = metric("lower", "decode mean", "decode", (*GREEDY, "output_logprobs"), rule="info",
                                       floor=True, pooled="prefill_mean", shown=("decode_effect",), unit="logprob")
    # Whether each side's token at the first divergence is in the other's top-k: the `topk` greedy rule's input.
    divergence_in_topk: bool | None = metric("higher", "divergence in top-k", "decode",
                                             (*GREEDY, "output_logprobs", "top_k"), rule="shown")
    rouge_l: float | None = metric("higher", "ROUGE-L", "text", rule="bound", shown=("table", "decode_effect"),
                                   history=True, unit="F", follows=True)
    # Structural gaps (a side returned fewer logprobs than tokens): always a failure.
    missing: list[str] = field(default_factory=list)
    unavailable: dict[str, str] = field(default_factory=dict)
    # Every judged metric of this comparison, with its floor, ratio, bound and level (see Finding).
    checks: dict[str, Finding] = field(default_factory=dict)


# Metric names for every table, summary, gate and history: derived from the schema, never listed twice.
METRICS: tuple[str, ...] = tuple(f.name for f in fields(CaseComparison) if f.metadata.get("metric"))
METRIC_INFO: dict[str, dict[str, Any]] = {f.name: dict(f.metadata) for f in fields(CaseComparison)
                                          if f.metadata.get("metric")}
SCALAR_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(CaseComparison)
                                       if f.type in ("int", "float | None", "int | None", "bool | None"))


def shown_in(view: str) -> tuple[str, ...]:
    """The metrics a view shows (VIEWS), in declaration order."""
    assert view in VIEWS
    return tuple(name for name, info in METRIC_INFO.items() if view in info["shown"])


def judged_by(rule: str) -> tuple[str, ...]:
    """The metrics judged by a rule (RULES), in declaration order."""
    assert rule in RULES
    return tuple(name for name, info in METRIC_INFO.items() if info["rule"] == rule)


# The metrics the report's grid and the step summary show per case, with their ratio to the floor.
TABLE_METRICS = shown_in("table")


@dataclass
class VariantResult:
    """One case on one variant (a path through the engine): its verdict and what is behind it.

    `comparison` is against the reference, `against_base` against the engine's
    own base variant (batch invariance, cache hits, input forms); either is None
    when the variant is not judged against it. `attempts` holds repeated
    submissions beyond the first (`engine`). `findings` are the checks that
    failed or drift, over every comparison of the variant, as records;
    `notes` the rest as records (an engine error, the known failure it
    matches, a path it did not exercise, what it was compared with);
    `reasons` why the plan skipped it, in the plan's words. `details` carries
    what a variant measures besides the comparison (pixel deltas of a
    decoder, which image spans a prefill chunk split).
    """

    variant: str
    verdict: str
    reasons: list[str] = field(default_factory=list)
    comparison: CaseComparison | None = None
    against_base: CaseComparison | None = None
    engine: EngineOutput | None = None
    attempts: list[EngineOutput] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    ladder: Ladder | None = None  # where inside the model it first differs (`harness.localize`), when probed
    notes: list[Note] = field(default_factory=list)

    @property
    def failing(self) -> list[Finding]:
        return [f for f in self.findings if f.level == "fail"]

    @property
    def drifting(self) -> list[Finding]:
        return [f for f in self.findings if f.level == "drift"]

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {self.verdict!r}")


@dataclass
class Rung:
    """One stage of a case's ladder (`harness.judging.ladder.STAGES`): how the engine's value there compares
    with the reference's. `status` is "pass", "differs", "unavailable" (with the `reason`: the adapter cannot
    expose it, or the two sides' layouts cannot be compared), or "not-compared" (after the first that
    differs, or nothing captured). `error` is the max |engine - reference|, `scale` the reference's max
    |value| (their ratio is the relative difference), `floor` the reference's own error there (recomputed
    by its floor runs), `bound` the tolerance used; `where` names the worst element (which image and rows,
    which layer, which position axis)."""

    stage: str
    status: str
    shapes: list[list[int]] = field(default_factory=list)
    error: float | None = None
    scale: float | None = None
    floor: float | None = None
    bound: float | None = None
    where: str = ""
    reason: str = ""


@dataclass
class Ladder:
    """Where inside the model a failing variant first parts from the reference: its stages in order, and the
    first that differs (None: every stage the probe compared agrees, so the difference needs the run's state
    to appear: a cache, a batch, a repeat)."""

    variant: str
    rungs: list[Rung] = field(default_factory=list)
    first: str | None = None
    probe_error: str | None = None


@dataclass
class CaseResult:
    """One case: its overall verdict (the worst of its variants'), and every variant.

    `reasons` are the case's own in the words of the module that refused it (an invalid case, media the
    model does not take); `notes` what the run says of it as records (a failed reference, a stale stored
    one, a reference check's warning); its variants' findings and notes are rendered with them at the
    edges (`harness.judging.explain`). `headline` names the variant the tables show (the base variant when it
    ran); `comparison` and `engine` are that variant's. `floor` is the reference's own error on the case,
    what every variant's metrics are judged relative to.
    """

    case_id: str
    verdict: str
    reasons: list[str] = field(default_factory=list)
    source: str = ""
    tags: list[str] = field(default_factory=list)
    images: list[str] = field(default_factory=list)
    videos: list[str] = field(default_factory=list)  # each video's folder of frames
    # The case's chat messages (roles, text and image parts, images in `images` order), and the prompt as
    # rendered with the reference's chat template: the report shows the first, one click from the second.
    messages: list[dict[str, Any]] = field(default_factory=list)
    prompt_text: str = ""
    thresholds: dict[str, Any] = field(default_factory=dict)
    reference: EngineOutput | None = None
    variants: dict[str, VariantResult] = field(default_factory=dict)
    headline: str | None = None
    # Checks of the reference and the case (self-consistency, image sensitivity), and the notes of the
    # case: the warnings its checks raise (never failures, but they say what a verdict is worth), and
    # why it is an error when it never reached judging.
    checks: dict[str, Any] = field(default_factory=dict)
    notes: list[Note] = field(default_factory=list)
    # Decoded text of output tokens and top-k candidates, keyed by str(token id),
    # so the report can show tokens without a tokenizer.
    tokens: dict[str, str] = field(default_factory=dict)
    # Small data-URL thumbnails of the images, so a report needs no image files.
    thumbnails: list[str] = field(default_factory=list)
    # Where the reference came from ("live", or "stored: <file>") and, when a stored one
    # no longer describes the case, what changed (image bytes, prompt, weights, versions).
    reference_source: str = ""
    reference_stale: list[str] = field(default_factory=list)
    floor: Floor | None = None
    # Where its per-position data is, relative to the results folder (`harness.publish.positions`): the fields
    # that module declares positional are empty in results.json and read back from there.
    positions: str = ""

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {self.verdict!r}")

    @property
    def main(self) -> VariantResult | None:
        return self.variants.get(self.headline) if self.headline else None

    @property
    def comparison(self) -> CaseComparison | None:
        return self.main.comparison if self.main else None

    @property
    def ladder(self) -> Ladder | None:
        """The case's stage ladder (on the one variant it was probed on)."""
        return next((v.ladder for v in self.variants.values() if v.ladder is not None), None)

    @property
    def engine(self) -> EngineOutput | None:
        return self.main.engine if self.main else None


@dataclass
class SuiteShift:
    """One metric of the whole suite against a clean run (`harness.judging.suite`): the median ratio to the
    floor over the run's cells and the clean one, their quotient, the rank test's one-sided p-value, and
    whether the suite drifts on it (a finding of the run, never of a case)."""

    metric: str
    cells: int
    median: float
    clean_median: float
    shift: float | None  # None where the clean median is 0
    p_value: float
    drifts: bool
    clean_source: str = ""


@dataclass
class RunResult:
    """A whole run: provenance, per-case results and how the run itself ended.

    `status` is "running" while cases are still being written, "complete" when
    every case has a result, and "failed" when the run itself broke (`error`);
    `read_results` returns "partial" for a run stopped while still "running".
    `variants` lists the variants of the plan with what each is for,
    `skipped` the variants the plan left out with the reason, and `notes`
    what makes the run less telling than it looks (a variant that exercised nothing), as records.
    """

    provenance: Provenance = field(default_factory=Provenance)
    cases: list[CaseResult] = field(default_factory=list)
    variants: list[dict[str, Any]] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    notes: list[Note] = field(default_factory=list)
    # The suite's ratios against a clean run's, per metric (`harness.judging.suite`); empty without a clean
    # sample for this model, engine and dtype.
    suite: list[SuiteShift] = field(default_factory=list)
    status: str = "running"
    error: str | None = None
    schema_version: int = SCHEMA_VERSION

    def counts(self) -> dict[str, int]:
        return {v: sum(c.verdict == v for c in self.cases) for v in VERDICTS}

    @property
    def verdict(self) -> str:
        """error if the run broke, did not finish or judged no case; fail if any judged case failed
        other than by a known failure."""
        judged = [c for c in self.cases if c.verdict != "skipped"]
        if self.status != "complete" or self.error or not judged:
            return "error"
        return "pass" if all(c.verdict in PASSING for c in judged) else "fail"

    def case(self, case_id: str) -> CaseResult:
        for c in self.cases:
            if c.case_id == case_id:
                return c
        raise KeyError(case_id)

    def to_dict(self) -> dict[str, Any]:
        return plain(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunResult:
        version = d.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ValueError(f"results schema_version {version!r}: this vlm-parity reads version {SCHEMA_VERSION} "
                             "only; re-run the cases with this version (or render the file with the version that "
                             "wrote it)")
        return from_dict(cls, d)


T = TypeVar("T")

# The per-position fields of the schema's dataclasses: the columnar store beside the results holds them
# (`harness.publish.positions`), results.json leaves them empty, and a run keeps no case's in memory once written.
POSITIONAL: dict[type, tuple[str, ...]] = {
    EngineOutput: ("prompt_ids", "prompt_logprobs", "output_ids", "output_logprobs"),  # and its completions' own
    Completion: ("output_ids", "output_logprobs"),
    CaseComparison: ("prefill_diffs", "image_mask"),
    Floor: ("diffs",),
    CaseResult: ("tokens",),
}


def without_positions(obj: T) -> T:
    """A shallow copy of `obj` (one of `POSITIONAL`'s dataclasses, or None) without its per-position fields, nor
    its answers' (an output's completions keep their text and finish reason)."""
    if obj is None:
        return obj
    changes: dict[str, Any] = {name: type(getattr(obj, name))() for name in POSITIONAL[type(obj)]}
    if isinstance(obj, EngineOutput):
        changes["completions"] = [without_positions(c) for c in obj.completions]
    return dataclasses.replace(obj, **changes)  # type: ignore[type-var]


def plain(obj: Any, columns: bool = False) -> dict[str, Any]:
    """`dataclasses.asdict`, with a side's columns (`Scores`) as the list of entries they stand for (a stored
    reference's diff-friendly JSON), or as their columns (`columns`: an engine process's messages)."""
    return asdict(obj, dict_factory=_as_columns if columns else _as_entries)


def _as_entries(items: list[tuple[str, Any]]) -> dict[str, Any]:
    return {k: [None if e is None else asdict(e) for e in v] if isinstance(v, Scores) else v for k, v in items}


def _as_columns(items: list[tuple[str, Any]]) -> dict[str, Any]:
    return {k: v.as_json() if isinstance(v, Scores) else v for k, v in items}


def to_dict(obj: Any) -> Any:
    """A dataclass as plain JSON data, recursively, leaving out every field at its default: `from_dict` fills them
    back, and a run's thousands of findings and cells are mostly defaults (half the bytes of results.json)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out = {}
        for f in fields(obj):
            value = getattr(obj, f.name)
            if f.default is not dataclasses.MISSING and _same(value, f.default):
                continue
            if f.default_factory is not dataclasses.MISSING and not value and value == f.default_factory():
                continue
            out[f.name] = to_dict(value)
        if isinstance(out.get("checks"), dict):
            _without_values(obj, out["checks"])
        return out
    if isinstance(obj, dict):  # a check keyed by its metric does not repeat it (`from_dict` puts it back)
        return {k: _without_metric(to_dict(v)) if isinstance(v, Finding) and v.metric == k else to_dict(v)
                for k, v in obj.items()}
    if isinstance(obj, (list, tuple, Scores)):
        return [to_dict(v) for v in obj]
    return obj


def _without_metric(finding: dict[str, Any]) -> dict[str, Any]:
    del finding["metric"]
    return finding


def _without_values(owner: Any, checks: dict[str, Any]) -> None:
    """A check whose value is its owner's field of the same name (a comparison's metric) does not repeat it:
    the numbers are most of a large run's results.json. A value the owner does not have stays, written even
    when None, since `_decode` reads a missing one from the owner."""
    for name, check in checks.items():
        if not isinstance(check, dict):
            continue
        if "value" in check and check["value"] == getattr(owner, name, _ABSENT):
            del check["value"]
        elif "value" not in check and getattr(owner, name, None) is not None:
            check["value"] = None


def _with_values(cls: type, owner: dict[str, Any]) -> dict[str, Any]:
    """`_without_values` undone on the JSON data of a `cls`, before it is decoded."""
    checks = owner.get("checks")
    if not isinstance(checks, dict):
        return owner
    names = {f.name for f in fields(cls)}
    missing = [k for k, c in checks.items() if k in names and isinstance(c, dict) and "value" not in c]
    if not missing:
        return owner
    return {**owner, "checks": {**checks, **{k: {"value": owner.get(k), **checks[k]} for k in missing}}}


_ABSENT = object()


def _same(value: Any, default: Any) -> bool:
    return type(value) is type(default) and value == default


def from_dict(cls: type[T], data: Any) -> T:
    """Build dataclass `cls` from plain JSON data, recursively, by its type hints.

    Missing fields take their defaults and unknown keys are ignored, so older
    and newer files of the same schema version both load.
    """
    return _decode(cls, data)


@typing.no_type_check
def _decode(tp: Any, value: Any) -> Any:
    if value is None:
        return None
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(tp) if a is not type(None)]
        return _decode(options[0], value) if len(options) == 1 else value
    if tp is Scores:
        return Scores.from_json(value) if isinstance(value, dict) else Scores.of([_decode(TokenLogprobs, v)
                                                                                  for v in value])
    if dataclasses.is_dataclass(tp):
        hints = _hints(tp)
        value = _with_values(tp, value)
        kwargs = {f.name: _decode(hints[f.name], value[f.name]) for f in fields(tp) if f.init and f.name in value}
        return tp(**kwargs)
    if origin is list:
        (item,) = typing.get_args(tp) or (Any,)
        return [_decode(item, v) for v in value]
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_decode(args[0], v) for v in value)
        return tuple(_decode(a, v) for a, v in zip(args, value))
    if origin is dict:
        _, item = typing.get_args(tp) or (Any, Any)
        if item is Finding:  # keyed by its metric, which `to_dict` left out
            return {k: _decode(item, {"metric": k, **v}) for k, v in value.items()}
        return {k: _decode(item, v) for k, v in value.items()}
    if tp is float:
        return float(value)
    if tp is int and not isinstance(value, bool):
        return int(value)
    return value


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls, vars(sys.modules[cls.__module__]))
    return _HINTS[cls]
