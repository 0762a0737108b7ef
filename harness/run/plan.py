"""The run plan: everything a run will do, computed once by pure functions before any engine starts.

From the config, the loaded cases, the variants and the engines' capabilities: which cases run
(shards, `--case`), which variants the engine or machine cannot run (with the reason), what the
reference is asked (the reference itself, the flat-grey image-sensitivity run, re-runs with other
decoders' pixels, the floor runs), how the engine's requests group into engine starts (one per
distinct engine settings, the base variant's first), and so what output each case waits for. The
runner, `record`, the pytest plugin and the bench all take their plan from here.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from harness import config
from harness.engines.base import Capabilities, Engine, EngineSettings, Request, resolve_engine
from harness.engines.features import REQUEST_FIELDS, declared_fields
from harness.inputs.cases import Case, CaseProblem, LoadedCases, load_cases
from harness.inputs.decode import same_pixels
from harness.inputs.models import DEFAULT_MODEL, processor_options, resolve_model, video_options, video_token_id
from harness.run.known import KnownFailure, load_known
from harness.run.ledger import REFERENCE, SCORING, Key
from harness.run.options import RunConfig
from harness.run.variants import (
    DECODER_PREFIX,
    Variant,
    VariantSet,
    load_variants,
    reference_key,
    rerun_floor_name,
    rerun_name,
    scored_name,
)

FLOOR_PREFIX = "floor-"  # request variants of the reference that measure a floor
OPTIONS = "options"  # the reference re-run with the model's per-request processor options (`reference-options`)
# Engine-neutral features whose value is chosen from the reference's outputs (a prefill chunk size
# from the image spans): a group with one starts only once the reference has finished.
NEEDS_REFERENCE = ("prefill_chunk_tokens",)


@dataclass(frozen=True)
class Side:
    """One side of the run, resolved once: the adapter, the checkpoint as asked (`model_name`: a built-in
    name or a path) and as loaded (`model`), the dtype and the device, and what the adapter can do with it."""

    engine: str
    adapter: type[Engine]
    model_name: str
    model: str
    dtype: str
    device: str
    capabilities: Capabilities

    def settings(self, top_k: int, **changes: Any) -> EngineSettings:
        return EngineSettings(self.model, self.dtype, self.device, top_k, **changes)


def resolve_side(engine: str, model_name: str, model: str, dtype: str, device: str) -> Side:
    adapter = resolve_engine(engine)
    return Side(engine, adapter, model_name, model, dtype, device, adapter.capabilities_for(model))


def model_side(engine: str, model: str | None, dtype: str, device: str) -> Side:
    """A side serving `model` (a built-in name, a folder, a hub id; None: the default model)."""
    return resolve_side(engine, model or DEFAULT_MODEL, resolve_model(model), dtype, device)


def resolve_sides(cfg: RunConfig) -> tuple[Side, Side]:
    """The engine under test and the reference, every default applied here and nowhere else: the reference
    serves `--model` unless `--reference-model` names another, in the engine's dtype and on its device
    unless told otherwise."""
    engine = model_side(cfg.engine, cfg.model, cfg.dtype, cfg.device)
    dtype, device = cfg.reference_dtype or cfg.dtype, cfg.reference_device or cfg.device
    reference = (model_side(cfg.reference_engine, cfg.reference_model, dtype, device) if cfg.reference_model else
                 resolve_side(cfg.reference_engine, engine.model_name, engine.model, dtype, device))
    return engine, reference


@dataclass
class CaseSelection:
    """The cases a run covers, and the results it owes for cases that will never reach an engine."""

    cases: list[Case]
    errors: dict[str, list[str]] = field(default_factory=dict)  # case id (or <file>) -> why it is an error
    sources: dict[str, str] = field(default_factory=dict)  # the file an erroring case came from
    skipped: dict[str, str] = field(default_factory=dict)  # case id -> why the model cannot run it (its media)
    partial: bool = False  # a subset of the suite (--case, pytest -k): no baseline for the nightly history
    plan_cases: list[str] = field(default_factory=list)  # every shard's cases together (they must agree to merge)


@dataclass
class EngineGroup:
    """Variants that share engine settings, and so one engine start; `needs_reference` when its settings
    are chosen from the reference's outputs."""

    settings: EngineSettings
    variants: list[str]
    requests: list[Request] = field(default_factory=list)
    needs_reference: bool = False


@dataclass
class RunPlan:
    """The fully resolved run, built once by `make_plan` and shared by every front end: both sides, the
    thresholds and known failures in force, the cases and variants with what does not apply and why,
    the floors; and, once the prompts are known (`dispatch`), what the reference and each engine group
    are asked."""

    cfg: RunConfig
    engine: Side
    reference: Side
    thresholds: dict[str, Any]
    known: list[KnownFailure]
    selection: CaseSelection
    variant_set: VariantSet
    paths: Paths
    case_skips: dict[str, dict[str, str]]  # case -> variant -> why the variant does not apply to it
    overlap: bool  # whether the reference and the engine groups may run at once
    reference_requests: list[Request] = field(default_factory=list)
    groups: list[EngineGroup] = field(default_factory=list)

    @property
    def cases(self) -> list[Case]:
        return self.selection.cases

    @property
    def variants(self) -> list[Variant]:
        return self.paths.variants

    @property
    def base(self) -> str:
        return self.paths.base

    @property
    def skipped(self) -> dict[str, str]:
        """Variant -> why the engine or this machine cannot run it."""
        return self.paths.skipped

    @property
    def floors(self) -> dict[str, dict[str, dict[str, Any]]]:
        """Engine dtype -> floor run name -> the reference's overrides."""
        return self.paths.floors

    @property
    def no_floor(self) -> str | None:
        """Why the reference cannot measure floors."""
        return self.paths.no_floor

    @property
    def unsupported_features(self) -> list[str]:
        """The base `engine:` features this engine lacks (`base_features`)."""
        return base_features(self.variant_set.engine, self.engine.capabilities)[1]

    def dtype_of(self, variant: Variant) -> str:
        """The engine's dtype on this variant."""
        return variant.dtype or self.engine.dtype

    def engine_settings(self, chat_template: str | None = None) -> EngineSettings:
        """The settings every engine group starts from (a variant's own settings go over them)."""
        cfg = self.cfg
        features, _ = base_features(self.variant_set.engine, self.engine.capabilities)
        return self.engine.settings(cfg.top_k, features=features, options=cfg.engine_options,
                                    url=cfg.engine_url, chat_template=chat_template)

    def reference_settings(self) -> EngineSettings:
        return self.reference.settings(self.cfg.top_k)

    def narrow(self, cases: set[str], variants: Sequence[str]) -> RunPlan:
        """The plan for a subset of its cases and variants (what `pytest -k` selected), resolved as before:
        the floors and reference re-runs follow the variants kept."""
        kept = self.selection
        selection = replace(kept, cases=[c for c in kept.cases if c.id in cases],
                            errors={k: v for k, v in kept.errors.items() if k in cases},
                            partial=kept.partial or not (set(kept.plan_cases) | set(kept.errors)) - set(kept.skipped)
                            <= cases,
                            plan_cases=sorted(set(kept.plan_cases) & cases))
        cfg = replace(self.cfg, variants=list(variants), decode_effect=None, only=set(cases))
        paths = plan_paths(cfg, self.variant_set, self.engine.capabilities, self.reference,
                           self.paths.floor_recipe, self.paths.mm_options, self.paths.video_options)
        return replace(self, cfg=cfg, selection=selection, paths=paths,
                       case_skips=case_skips(paths, selection.cases))

    def dispatch(self, prompts: Mapping[str, str], stored: Sequence[str], chat_template: str | None) -> RunPlan:
        """The plan with its requests: the reference computes every case whose reference is not `stored`
        (recorded outputs and floors), each engine group every case the group's variants apply to."""
        cases = [c for c in self.cases if c.id in prompts]
        live = [c for c in cases if c.id not in set(stored)]
        paths = self.paths
        runs = {} if paths.no_floor else {n: o for per_dtype in paths.floors.values() for n, o in per_dtype.items()}
        requests = reference_requests(live, prompts, paths.decoders, self.reference.capabilities, runs,
                                      paths.mm_options, paths.video_options, paths.same)
        groups = engine_groups(paths, cases, self.case_skips, prompts, self.engine_settings(chat_template),
                               self.cfg.decoder)
        return replace(self, selection=replace(self.selection, cases=cases), reference_requests=requests,
                       groups=groups, case_skips={c.id: self.case_skips[c.id] for c in cases})

    def expected(self) -> dict[str, dict[Key, str]]:
        """Case -> each output it waits for -> the stream that owes it (the reference, a group index, or the
        scoring of sampled answers)."""
        owed: dict[str, dict[Key, str]] = {c.id: {} for c in self.cases}
        for r in self.reference_requests:
            owed[r.case_id][(r.variant, 0)] = REFERENCE
        scored = {v.name: v.answers for v in self.scored}
        for index, group in enumerate(self.groups):
            for r in group.requests:
                owed[r.case_id].update({(r.variant, a): str(index) for a in range(r.repeats)})
                owed[r.case_id].update({(scored_name(r.variant, i), 0): SCORING for i in range(scored.get(
                    r.variant, 0))})
        return owed

    @property
    def sampled(self) -> list[Variant]:
        """The sampled variants the run takes (`Variant.sampled`)."""
        return [v for v in self.variants if v.sampled and v.name not in self.skipped]

    @property
    def scored(self) -> list[Variant]:
        """The sampled variants whose answers the reference scores, token by token (none where it cannot, or the
        engine returns no output ids to score)."""
        return self.sampled if self.reference.capabilities.scores and self.engine.capabilities.output_ids else []

    def scoring_requests(self, case: Case, variant: Variant, answers: Sequence[Sequence[int] | None],
                         prompt: str) -> list[Request]:
        """The reference's requests scoring a sampled variant's answers (their output ids; None for one that
        never came) of one case: the request it is compared with, forced through each answer's tokens under the
        variant's sampling and penalties."""
        paths, key = self.paths, reference_key(variant)
        decoders = [d for d in paths.decoders if rerun_name(d) == key]  # only its own re-run: pixels are compared
        planned = reference_requests([case], {case.id: prompt}, decoders, self.reference.capabilities, None,
                                     paths.mm_options, paths.video_options,
                                     {n: v for n, v in paths.same.items() if rerun_name(n) == key})
        own = next((r for r in planned if r.variant == key), planned[0])
        return [replace(own, variant=scored_name(variant.name, i), forced=tuple(ids),
                        sampling=variant.request.get("sampling"), penalties=variant.request.get("penalties"))
                for i, ids in enumerate(answers) if ids is not None]


def in_shard(case_id: str, index: int, total: int) -> bool:
    """Deterministic, order-free slicing: a case's shard is a hash of its id."""
    return int(hashlib.sha256(case_id.encode()).hexdigest(), 16) % total == index - 1


def problem_id(problem: CaseProblem) -> str:
    """The id a case problem is reported under; a file-level problem is named by its file."""
    return problem.case_id or f"<{problem.file}>"


def select_cases(cfg: RunConfig, loaded: LoadedCases) -> CaseSelection:
    """The selected cases of this shard; invalid and unknown ones become errors with their reasons."""
    mine = (lambda case_id: True) if cfg.shard is None else (lambda case_id: in_shard(case_id, *cfg.shard))
    wanted = (lambda case_id: mine(case_id)) if cfg.only is None else (lambda case_id: case_id in cfg.only
                                                                       and mine(case_id))
    selection = CaseSelection([c for c in loaded.cases if wanted(c.id)])
    for problem in loaded.problems:
        if wanted(problem_id(problem)):
            selection.errors.setdefault(problem_id(problem), []).append(f"invalid case: {problem}")
            selection.sources.setdefault(problem_id(problem), str(problem.file))
    known = {c.id for c in loaded.cases} | {problem_id(p) for p in loaded.problems}
    for case_id in sorted((cfg.only or set()) - known):
        if mine(case_id):
            selection.errors[case_id] = [f"no case {case_id!r} in {', '.join(map(str, cfg.cases))}"]
    selection.partial = cfg.only is not None and not known <= cfg.only
    selection.plan_cases = sorted(c.id for c in loaded.cases if cfg.only is None or c.id in cfg.only)
    return selection


def without_media(selection: CaseSelection, takes_video: bool) -> CaseSelection:
    """The selection less the cases whose media the model does not take (skipped, with the reason)."""
    skipped = {c.id: reason for c in selection.cases if (reason := media_skip_reason(c, takes_video))}
    return replace(selection, cases=[c for c in selection.cases if c.id not in skipped],
                   skipped={**selection.skipped, **skipped},
                   sources={**selection.sources, **{c.id: str(c.source) for c in selection.cases if c.id in skipped}})


def select_variants(cfg: RunConfig, variant_set: VariantSet) -> list[Variant]:
    """The variants the run asked for (`--variants`, plus `--decode-effect`'s), base first."""
    names = list(cfg.variants or [cfg.profile]) + ([DECODER_PREFIX + cfg.decode_effect] if cfg.decode_effect else [])
    return variant_set.select(names)


def engine_skip_reason(variant: Variant, capabilities: Capabilities, engine: str, device: str) -> str | None:
    """Why this engine (or machine) cannot run the variant at all; None if it can."""
    needed = variant.requires.get("device")
    if needed and not device.startswith(needed):
        return f"needs a {needed} device; this run's engine device is {device}"
    request = {name: spec.default for name, spec in REQUEST_FIELDS.items()} | variant.request
    if request["prompt_form"] not in capabilities.prompt_forms:
        return f"engine {engine!r} does not accept the {request['prompt_form']!r} prompt form"
    if request["image_input"] not in capabilities.image_inputs:
        why = capabilities.missing_inputs.get(request["image_input"])
        return f"engine {engine!r} does not accept images as {request['image_input']}" + (f": {why}" if why else "")
    if request["sampling"] and not capabilities.sampling:
        return f"engine {engine!r} does not sample"
    unsupported = [k for k in declared_fields(variant.request) if k not in capabilities.request_fields]
    if unsupported:
        return f"engine {engine!r} does not take per-request {', '.join(unsupported)}"
    missing = sorted(set(variant.features) - capabilities.features)
    if missing:
        return f"engine {engine!r} does not support {', '.join(missing)}"
    return None


def reference_skip_reason(variant: Variant, reference: Side) -> str | None:
    """Why the reference cannot be re-run as the variant asks (a request field its engine does not take)."""
    lacking = sorted(set(variant.reference_same) - reference.capabilities.request_fields)
    return (f"the reference engine {reference.engine!r} does not take the request field(s) {', '.join(lacking)} "
            "the variant is compared under") if lacking else None


def base_features(features: Mapping[str, Any], capabilities: Capabilities) -> tuple[dict[str, Any], list[str]]:
    """The top-level `engine:` features of variants.yaml this engine takes, and those it does not, which the
    run notes once (`unsupported_base_features`): it starts with its own default for them (they tune every
    path; skipping every variant for one would run nothing)."""
    missing = sorted(set(features) - capabilities.features)
    return {k: v for k, v in features.items() if k not in missing}, missing


def media_skip_reason(case: Case, takes_video: bool) -> str | None:
    """Why the model cannot run this case at all (its media), so neither side runs it; None if it can."""
    if case.videos and not takes_video:
        return "the model takes no video (its config names no video_token_id)"
    return None


def case_skip_reason(variant: Variant, case: Case, mm_options: Mapping[str, Any] | None,
                     engine_video: bool) -> str | None:
    if variant.cases == "images" and not case.images:
        return "the case has no images"
    if case.videos and not engine_video:
        return "the engine's adapter does not take video frames"
    if case.videos and variant.request.get("prompt_form") == "native":
        return "the native form hands the engine the case's files to decode; a video given as frames has none"
    return model_skip_reason(variant, mm_options)


def model_skip_reason(variant: Variant, mm_options: Mapping[str, Any] | None) -> str | None:
    """Why the variant cannot apply to the model whatever the case (its processor has no options to send)."""
    if variant.request.get("mm_kwargs") == "auto" and not mm_options:
        return "the model's processor has no per-request option that changes its image tokens"
    return None


def engine_settings(variant: Variant, base: EngineSettings) -> EngineSettings:
    """The settings the variant's engine is started with."""
    return replace(base, dtype=variant.dtype or base.dtype, features={**base.features, **variant.features},
                   options={**base.options, **variant.engine_options})


def build_request(variant: Variant, case: Case, prompt_text: str, decoder: str,
                  mm_options: Mapping[str, Any] | None = None, video_options: Mapping[str, Any] | None = None) -> Request:
    """The request for one case on one variant; `decoder` is the run's default engine decoder, `mm_options`
    the model's per-request processor options (what `mm_kwargs: auto` stands for), `video_options` what a
    request with a video pins in the processor (`harness.inputs.models.video_options`)."""
    known = {f.name for f in fields(Request)}
    values = {"decoder": decoder, **{k: v for k, v in variant.request.items() if k in known}}
    if values.get("mm_kwargs") == "auto":
        values["mm_kwargs"] = dict(mm_options or {})
    if case.videos and video_options:
        values["mm_kwargs"] = {**video_options, **values.get("mm_kwargs", {})}
    return Request(case_id=case.id, prompt_text=prompt_text, variant=variant.name, messages=case.messages,
                   images=tuple(map(str, case.images)), videos=_videos(case), max_new_tokens=case.max_new_tokens,
                   **values)


def _videos(case: Case) -> tuple[tuple[str, ...], ...]:
    return tuple(tuple(map(str, frames)) for frames in case.videos)


def settings_key(settings: EngineSettings) -> str:
    """Variants with equal keys share one engine start."""
    return json.dumps(asdict(settings), sort_keys=True, default=str)


def floor_runs(engine_dtype: str, reference_dtype: str, attention: str, same_dtype: str) -> dict[str, dict[str, Any]]:
    """How the reference is recomputed to measure a case's floor for an engine in `engine_dtype`
    (run name -> the reference's overrides), both measured exactly like the engine's error:

    - in the engine's dtype with another attention kernel (`attention`): the rounding a legitimate
      reordering of the same dtype's arithmetic gives;
    - in the engine's dtype when it is not the reference's (a bfloat16 engine against a float32
      reference: what bfloat16 alone costs), else in `same_dtype` (float64: the reference's own
      rounding error, torch.dynamo's yardstick).
    """
    precise = engine_dtype if engine_dtype != reference_dtype else same_dtype
    return {f"{FLOOR_PREFIX}{precise}": {"dtype": precise},
            f"{FLOOR_PREFIX}{engine_dtype}-{attention}": {"dtype": engine_dtype, "attn_implementation": attention}}


def plan_floors(dtypes: Sequence[str], reference_dtype: str, recipe: Mapping[str, Any],
                capabilities: Capabilities, reference_engine: str) -> tuple[dict[str, dict[str, dict[str, Any]]],
                                                                           str | None]:
    """Engine dtype -> its floor runs, and why there are none (a reference that cannot recompute with the
    runs' overrides: every metric then falls back to its ceiling)."""
    floors = {d: floor_runs(d, reference_dtype, recipe["attention"], recipe["same_dtype"]) for d in sorted(dtypes)}
    lacking = sorted({k for runs in floors.values() for o in runs.values() for k in o} - capabilities.overrides)
    if lacking:
        return floors, f"the reference engine {reference_engine!r} cannot recompute a request with {', '.join(lacking)}"
    return floors, None


def reference_decoders(variants: Sequence[Variant], mm_options: Mapping[str, Any] | None = None) -> list[str]:
    """The re-runs of the reference some variant is compared with: other decoders than PIL (by name), and
    `options` for the model's per-request processor options (where the model has any)."""
    return sorted({v.reference_decoder for v in variants} - {"pil"}) + (
        [OPTIONS] if mm_options and any(v.reference_mm for v in variants) else [])


def reference_same(variants: Sequence[Variant]) -> dict[str, dict[str, Any]]:
    """The re-runs of the reference with a variant's own request fields (`reference: {same: [...]}`), by the
    variant's name: the fields' values."""
    return {v.name: {f: v.request[f] for f in v.reference_same} for v in variants if v.reference_same}


def reference_requests(cases: Sequence[Case], prompts: Mapping[str, str], decoders: Sequence[str],
                       capabilities: Capabilities, floors: Mapping[str, dict[str, Any]] | None = None,
                       mm_options: Mapping[str, Any] | None = None,
                       video_options: Mapping[str, Any] | None = None,
                       same: Mapping[str, dict[str, Any]] | None = None) -> list[Request]:
    """Each case once as the reference sees it; each image case also with flat grey images (a case whose
    reference barely moves cannot catch image bugs) and, for variants compared with a reference that
    decodes differently, with that decoder's pixels where they differ from PIL's (or with the model's
    processor options, `options`); every case once per variant compared with the reference under its own
    request fields (`same`: penalties); and each case and re-run once per floor run (grouped by run, so the
    reference loads each recomputed model once)."""
    base = [Request(c.id, prompts.get(c.id, ""), REFERENCE, c.messages, tuple(map(str, c.images)), _videos(c),
                    max_new_tokens=c.max_new_tokens, mm_kwargs=dict(video_options or {}) if c.videos else {})
            for c in cases]
    with_images = [r for r in base if r.images]
    reruns: list[Request] = []
    for decoder in decoders:
        if decoder == OPTIONS:
            reruns += [replace(r, variant=rerun_name(OPTIONS), mm_kwargs={**r.mm_kwargs, **mm_options})
                       for r in with_images if mm_options]
        else:
            reruns += [replace(r, variant=rerun_name(decoder), decoder=decoder) for r in with_images
                       if not same_pixels(r.images, decoder)]
    reruns += [replace(r, variant=rerun_name(name), **values) for name, values in (same or {}).items() for r in base]
    requests = list(base)
    for name, overrides in (floors or {}).items():
        if set(overrides) <= capabilities.overrides:
            requests += [replace(r, variant=name, overrides=overrides) for r in base]
            requests += [replace(r, variant=rerun_floor_name(name, r.variant), overrides=overrides) for r in reruns]
    if "flat-grey" in capabilities.image_inputs:  # grey images, frozen videos
        requests += [replace(r, variant="flat-grey", image_input="flat-grey") for r in base if r.images or r.videos]
    return requests + reruns


def case_skips(paths: Paths, cases: Sequence[Case]) -> dict[str, dict[str, str]]:
    """Per case, the variants that do not apply to it, with the reason (the engine's skips included)."""
    skips: dict[str, dict[str, str]] = {c.id: dict(paths.skipped) for c in cases}
    for variant in paths.variants:
        if variant.name in paths.skipped:
            continue
        for case in cases:
            reason = case_skip_reason(variant, case, paths.mm_options, paths.engine_video)
            if reason:
                skips[case.id][variant.name] = reason
    return skips


def engine_groups(paths: Paths, cases: Sequence[Case], skips: Mapping[str, Mapping[str, str]],
                  prompts: Mapping[str, str], base_settings: EngineSettings, decoder: str) -> list[EngineGroup]:
    """Requests grouped by effective engine settings, the base variant's group first; a case goes to a
    variant's group unless `skips` (`case_skips`) says the variant does not apply to it."""
    groups: dict[str, EngineGroup] = {}
    for variant in paths.variants:
        if variant.name in paths.skipped:
            continue
        settings = engine_settings(variant, base_settings)
        group = groups.setdefault(settings_key(settings), EngineGroup(
            settings, [], needs_reference=any(f in settings.features for f in NEEDS_REFERENCE)))
        group.variants.append(variant.name)
        group.requests += [build_request(variant, case, prompts.get(case.id, ""), decoder, paths.mm_options,
                                         paths.video_options) for case in cases if variant.name not in skips[case.id]]
    return sorted((g for g in groups.values() if g.requests), key=lambda g: paths.base not in g.variants)


@dataclass
class Paths:
    """The paths a run takes, before any case is looked at: what a stored reference must hold for it."""

    variants: list[Variant]
    base: str
    skipped: dict[str, str]  # variant -> why the engine or this machine cannot run it
    decoders: list[str]  # the reference's re-runs some variant is compared with (other decoders, `options`)
    same: dict[str, dict[str, Any]]  # and those with a variant's own request fields (`reference_same`)
    floors: dict[str, dict[str, dict[str, Any]]]
    no_floor: str | None
    floor_recipe: dict[str, Any] = field(default_factory=dict)  # thresholds.yaml's `floor:` section
    mm_options: dict[str, Any] | None = None  # the model's per-request processor options (harness.inputs.models)
    video_options: dict[str, Any] = field(default_factory=dict)  # what a request with a video pins
    engine_video: bool = False  # whether the engine's adapter takes video frames


def plan_paths(cfg: RunConfig, variant_set: VariantSet, capabilities: Capabilities, reference: Side,
               floor_recipe: Mapping[str, Any], mm_options: Mapping[str, Any] | None = None,
               video_options: Mapping[str, Any] | None = None) -> Paths:
    variants = select_variants(cfg, variant_set)
    skipped = {v.name: reason for v in variants
               if (reason := engine_skip_reason(v, capabilities, cfg.engine, cfg.device)
                   or reference_skip_reason(v, reference))}
    dtypes = {v.dtype or cfg.dtype for v in variants if v.name not in skipped} or {cfg.dtype}
    floors, no_floor = plan_floors(dtypes, reference.dtype, floor_recipe, reference.capabilities, reference.engine)
    same = reference_same([v for v in variants if v.name not in skipped])
    return Paths(variants, variant_set.base, skipped, reference_decoders(variants, mm_options), same, floors, no_floor,
                 dict(floor_recipe), dict(mm_options) if mm_options else None, dict(video_options or {}),
                 "videos" in capabilities.request_fields)


def make_plan(cfg: RunConfig, loaded: LoadedCases | None = None) -> RunPlan:
    """The whole run resolved from its config: both sides, thresholds, known failures, the selected cases
    (`loaded`, else read from `cfg.cases`), the variants and what does not apply. The requests follow
    from the prompts (`RunPlan.dispatch`)."""
    engine, reference = resolve_sides(cfg)
    thresholds = config.load_config(cfg.thresholds_file)
    variant_set = load_variants(cfg.variants_files)
    mm_options, videos = processor_options(engine.model), video_options(engine.model)
    paths = plan_paths(cfg, variant_set, engine.capabilities, reference,
                       config.resolve_section(thresholds, "floor").values, mm_options, videos)
    selection = without_media(select_cases(cfg, loaded if loaded is not None else load_cases(cfg.cases)),
                              video_token_id(reference.model) is not None)
    known = load_known(engine.model_name, engine.model, engine.engine, engine.adapter.version(), engine.device)
    overlap = cfg.overlap == "on" if cfg.overlap != "auto" else {engine.device, reference.device} == {"cpu"}
    return RunPlan(cfg, engine, reference, thresholds, known, selection, variant_set, paths,
                   case_skips(paths, selection.cases), overlap)


@dataclass(frozen=True)
class Probe:
    """One failing case re-run for its stage ladder (`harness.localize`): the variant's engine request with
    its group's settings (eager: hooks must see every module), and the reference's request for what the
    variant is compared with, followed by that request's floor runs."""

    case_id: str
    variant: str
    engine: Request
    settings: EngineSettings
    reference: list[Request]


def plan_probes(plan: RunPlan, which: Mapping[str, str], prompts: Mapping[str, str]) -> list[Probe]:
    """The probes for `which` (case id -> the variant to localize): one request each, prefill only, with the
    variant's own warm-up and repeats (the engine captures the last submission: a cache path is taken)."""
    variants = {v.name: v for v in plan.variants}
    cases = {c.id: c for c in plan.cases}
    probes = []
    for case_id, name in which.items():
        variant, case = variants.get(name), cases.get(case_id)
        found = [(g, r) for g in plan.groups if name in g.variants for r in g.requests
                 if r.case_id == case_id and r.variant == name]
        if variant is None or case is None or not found:
            continue
        group, request = found[0]
        features = {k: v for k, v in group.settings.features.items() if k != "compiled"}
        runs = {} if plan.no_floor else plan.floors.get(plan.dtype_of(variant), {})
        paths = plan.paths
        planned = reference_requests([case], prompts, paths.decoders, plan.reference.capabilities, runs,
                                     paths.mm_options, paths.video_options, paths.same)
        # The re-run the variant is compared with, where the case has one (a decoder whose pixels are PIL's
        # has none: the variant is compared with the reference itself).
        key = reference_key(variant)
        key = key if any(r.variant == key for r in planned) else REFERENCE
        names = {key, *(n if key == REFERENCE else rerun_floor_name(n, key) for n in runs)}
        reference = sorted((r for r in planned if r.variant in names), key=lambda r: r.variant != key)
        probes.append(Probe(case_id, name, replace(request, sampling=None, n=1, stop=None, max_new_tokens=1),
                            replace(group.settings, features=features), reference))
    return probes


def image_spans(prompt_ids: Sequence[int], image_token: int | None) -> list[tuple[int, int]]:
    """[start, end) runs of image placeholder tokens in a prompt."""
    spans, start = [], None
    for i, tid in enumerate([*prompt_ids, None]):
        if tid == image_token and start is None:
            start = i
        elif tid != image_token and start is not None:
            spans.append((start, i))
            start = None
    return spans


def split_spans(spans: Sequence[tuple[int, int]], budget: int) -> list[tuple[int, int]]:
    """The spans a prefill split into `budget`-token chunks cuts (a chunk boundary falls inside)."""
    return [(s, e) for s, e in spans if s // budget != (e - 1) // budget]


def chunk_budget(spans: Sequence[Sequence[tuple[int, int]]], smallest: int = 8, largest: int = 64) -> int:
    """The prefill chunk size that splits the most image spans over all cases (the larger one on a tie,
    for fewer engine steps)."""
    return max(range(smallest, largest + 1), key=lambda b: (sum(len(split_spans(s, b)) for s in spans), b))


@dataclass
class Chunking:
    """A prefill-chunked group's size, chosen from the reference's image spans, and what it splits."""

    tokens: int
    split: dict[str, list[tuple[int, int]]]  # case -> the image spans a chunk boundary falls inside


def resolve_chunking(group: EngineGroup, spans: Mapping[str, list[tuple[int, int]]]) -> tuple[EngineGroup,
                                                                                              Chunking | None]:
    """The group with an `auto` prefill chunk size made concrete (the size that splits the most image
    spans of its cases), and which spans it splits per case; no chunking for a group without the feature."""
    tokens = group.settings.features.get("prefill_chunk_tokens")
    if tokens is None:
        return group, None
    cases = sorted({r.case_id for r in group.requests})
    if tokens == "auto":
        tokens = chunk_budget([spans[c] for c in cases])
        group = replace(group, settings=replace(group.settings, features={**group.settings.features,
                                                                          "prefill_chunk_tokens": tokens}))
    return group, Chunking(int(tokens), {c: split_spans(spans[c], int(tokens)) for c in cases})
