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

from harness.cases import Case, CaseProblem, LoadedCases
from harness.compare.floor import rerun_floor_name
from harness.decode import same_pixels
from harness.engines.base import Capabilities, EngineSettings, Request
from harness.ledger import REFERENCE, Key
from harness.options import RunConfig
from harness.variants import DECODER_PREFIX, Variant, VariantSet, reference_key, rerun_name

FLOOR_PREFIX = "floor-"  # request variants of the reference that measure a floor
# Request fields an engine must declare it honours (`Capabilities.request_fields`), with their plain values.
REQUEST_EXTRAS = {"mm_kwargs": {}, "prompt_logprobs": True, "warmup": None}
OPTIONS = "options"  # the reference re-run with the model's per-request processor options (`reference-options`)
# Engine-neutral features whose value is chosen from the reference's outputs (a prefill chunk size
# from the image spans): a group with one starts only once the reference has finished.
NEEDS_REFERENCE = ("prefill_chunk_tokens",)


@dataclass
class CaseSelection:
    """The cases a run covers, and the results it owes for cases that will never reach an engine."""

    cases: list[Case]
    errors: dict[str, list[str]] = field(default_factory=dict)  # case id (or <file>) -> why it is an error
    sources: dict[str, str] = field(default_factory=dict)  # the file an erroring case came from
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
    cases: list[Case]
    variants: list[Variant]
    base: str
    skipped: dict[str, str]  # variant -> why the engine or this machine cannot run it
    case_skips: dict[str, dict[str, str]]  # case -> variant -> why the variant does not apply to it
    reference_requests: list[Request]
    groups: list[EngineGroup]
    floors: dict[str, dict[str, dict[str, Any]]]  # engine dtype -> floor run name -> the reference's overrides
    no_floor: str | None  # why the reference cannot measure floors
    paths: Paths | None = None

    def expected(self) -> dict[str, dict[Key, str]]:
        """Case -> each output it waits for -> the stream that owes it (the reference or a group index)."""
        owed: dict[str, dict[Key, str]] = {c.id: {} for c in self.cases}
        for r in self.reference_requests:
            owed[r.case_id][(r.variant, 0)] = REFERENCE
        for index, group in enumerate(self.groups):
            for r in group.requests:
                owed[r.case_id].update({(r.variant, a): str(index) for a in range(r.repeats)})
        return owed


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


def select_variants(cfg: RunConfig, variant_set: VariantSet) -> list[Variant]:
    """The variants the run asked for (`--variants`, plus `--decode-effect`'s), base first."""
    names = list(cfg.variants or [cfg.profile]) + ([DECODER_PREFIX + cfg.decode_effect] if cfg.decode_effect else [])
    return variant_set.select(names)


def engine_skip_reason(variant: Variant, capabilities: Capabilities, engine: str, device: str) -> str | None:
    """Why this engine (or machine) cannot run the variant at all; None if it can."""
    needed = variant.requires.get("device")
    if needed and not device.startswith(needed):
        return f"needs a {needed} device; this run's engine device is {device}"
    request = variant.request
    form = request.get("prompt_form", "rendered")
    if form not in capabilities.prompt_forms:
        return f"engine {engine!r} does not accept the {form!r} prompt form"
    image_input = request.get("image_input", "pixels")
    if image_input not in capabilities.image_inputs:
        return f"engine {engine!r} does not accept images as {image_input}"
    if request.get("sampling") and not capabilities.sampling:
        return f"engine {engine!r} does not sample"
    special = sorted(k for k, v in request.items() if k in REQUEST_EXTRAS and v != REQUEST_EXTRAS[k])
    unsupported = [k for k in special if k not in capabilities.request_fields]
    if unsupported:
        return f"engine {engine!r} does not take per-request {', '.join(unsupported)}"
    missing = sorted(set(variant.features) - capabilities.features)
    if missing:
        return f"engine {engine!r} does not support {', '.join(missing)}"
    return None


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
    request with a video pins in the processor (`harness.models.video_options`)."""
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


def reference_requests(cases: Sequence[Case], prompts: Mapping[str, str], decoders: Sequence[str],
                       capabilities: Capabilities, floors: Mapping[str, dict[str, Any]] | None = None,
                       mm_options: Mapping[str, Any] | None = None,
                       video_options: Mapping[str, Any] | None = None) -> list[Request]:
    """Each case once as the reference sees it; each image case also with flat grey images (a case whose
    reference barely moves cannot catch image bugs) and, for variants compared with a reference that
    decodes differently, with that decoder's pixels where they differ from PIL's (or with the model's
    processor options, `options`); and each case and re-run once per floor run (grouped by run, so the
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
    requests = list(base)
    for name, overrides in (floors or {}).items():
        if set(overrides) <= capabilities.overrides:
            requests += [replace(r, variant=name, overrides=overrides) for r in base]
            requests += [replace(r, variant=rerun_floor_name(name, r.variant), overrides=overrides) for r in reruns]
    if "flat-grey" in capabilities.image_inputs:  # grey images, frozen videos
        requests += [replace(r, variant="flat-grey", image_input="flat-grey") for r in base if r.images or r.videos]
    return requests + reruns


def engine_groups(paths: Paths, cases: Sequence[Case], prompts: Mapping[str, str], base_settings: EngineSettings,
                  decoder: str) -> tuple[list[EngineGroup], dict[str, dict[str, str]]]:
    """Requests grouped by effective engine settings, the base variant's group first; and, per case, the
    variants that do not apply to it with the reason."""
    groups: dict[str, EngineGroup] = {}
    case_skips: dict[str, dict[str, str]] = {c.id: dict(paths.skipped) for c in cases}
    for variant in paths.variants:
        if variant.name in paths.skipped:
            continue
        settings = engine_settings(variant, base_settings)
        group = groups.setdefault(settings_key(settings), EngineGroup(
            settings, [], needs_reference=any(f in settings.features for f in NEEDS_REFERENCE)))
        group.variants.append(variant.name)
        for case in cases:
            reason = case_skip_reason(variant, case, paths.mm_options, paths.engine_video)
            if reason:
                case_skips[case.id][variant.name] = reason
                continue
            group.requests.append(build_request(variant, case, prompts.get(case.id, ""), decoder, paths.mm_options,
                                                paths.video_options))
    ordered = sorted((g for g in groups.values() if g.requests), key=lambda g: paths.base not in g.variants)
    return ordered, case_skips


@dataclass
class Paths:
    """The paths a run takes, before any case is looked at: what a stored reference must hold for it."""

    variants: list[Variant]
    base: str
    skipped: dict[str, str]  # variant -> why the engine or this machine cannot run it
    decoders: list[str]  # the reference's re-runs some variant is compared with (other decoders, `options`)
    floors: dict[str, dict[str, dict[str, Any]]]
    no_floor: str | None
    mm_options: dict[str, Any] | None = None  # the model's per-request processor options (harness.models)
    video_options: dict[str, Any] = field(default_factory=dict)  # what a request with a video pins
    engine_video: bool = False  # whether the engine's adapter takes video frames


def plan_paths(cfg: RunConfig, variant_set: VariantSet, capabilities: Capabilities,
               reference_capabilities: Capabilities, floor_recipe: Mapping[str, Any],
               mm_options: Mapping[str, Any] | None = None, video_options: Mapping[str, Any] | None = None) -> Paths:
    variants = select_variants(cfg, variant_set)
    skipped = {v.name: reason for v in variants
               if (reason := engine_skip_reason(v, capabilities, cfg.engine, cfg.device))}
    dtypes = {v.dtype or cfg.dtype for v in variants if v.name not in skipped} or {cfg.dtype}
    floors, no_floor = plan_floors(dtypes, cfg.reference_dtype or cfg.dtype, floor_recipe, reference_capabilities,
                                   cfg.reference_engine)
    return Paths(variants, variant_set.base, skipped, reference_decoders(variants, mm_options), floors, no_floor,
                 dict(mm_options) if mm_options else None, dict(video_options or {}),
                 "videos" in capabilities.request_fields)


def make_plan(cfg: RunConfig, cases: Sequence[Case], paths: Paths, reference_capabilities: Capabilities,
              base_settings: EngineSettings, prompts: Mapping[str, str], stored: Sequence[str]) -> RunPlan:
    """The whole plan of a run. `stored` are the cases whose reference outputs (and floors) are recorded:
    the reference computes only the others."""
    live = [c for c in cases if c.id not in set(stored)]
    runs = {} if paths.no_floor else {n: o for per_dtype in paths.floors.values() for n, o in per_dtype.items()}
    requests = reference_requests(live, prompts, paths.decoders, reference_capabilities, runs, paths.mm_options,
                                  paths.video_options)
    groups, case_skips = engine_groups(paths, cases, prompts, base_settings, cfg.decoder)
    return RunPlan(list(cases), paths.variants, paths.base, dict(paths.skipped), case_skips, requests, groups,
                   paths.floors, paths.no_floor, paths)


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


def plan_probes(plan: RunPlan, which: Mapping[str, str], prompts: Mapping[str, str],
                reference_capabilities: Capabilities, engine_dtype: str) -> list[Probe]:
    """The probes for `which` (case id -> the variant to localize): one request each, prefill only, with the
    variant's own warm-up and repeats (the engine captures the last submission: a cache path is taken)."""
    variants = {v.name: v for v in plan.variants}
    cases = {c.id: c for c in plan.cases}
    probes = []
    for case_id, name in which.items():
        variant, case = variants.get(name), cases.get(case_id)
        found = [(g, r) for g in plan.groups if name in g.variants for r in g.requests
                 if r.case_id == case_id and r.variant == name]
        if variant is None or case is None or not found or plan.paths is None:
            continue
        group, request = found[0]
        features = {k: v for k, v in group.settings.features.items() if k != "compiled"}
        runs = {} if plan.no_floor else plan.floors.get(variant.dtype or engine_dtype, {})
        paths = plan.paths
        planned = reference_requests([case], prompts, paths.decoders, reference_capabilities, runs, paths.mm_options,
                                     paths.video_options)
        # The re-run the variant is compared with, where the case has one (a decoder whose pixels are PIL's
        # has none: the variant is compared with the reference itself).
        key = reference_key(variant)
        key = key if any(r.variant == key for r in planned) else REFERENCE
        names = {key, *(n if key == REFERENCE else rerun_floor_name(n, key) for n in runs)}
        reference = sorted((r for r in planned if r.variant in names), key=lambda r: r.variant != key)
        probes.append(Probe(case_id, name, replace(request, sampling=None, max_new_tokens=1),
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
