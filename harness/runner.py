"""A parity run, orchestrated: cases x variants -> reference -> engine groups -> verdicts -> results.

The reference runs first, then one engine process per group of variants that
share engine settings (the base variant's group first). Each case is judged
and written as soon as its last expected output arrives. Every failure below
the run itself becomes an `error` result for that case or variant, with its reason.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from harness import __version__, config
from harness.cases import Case, CaseProblem, load_cases
from harness.decode import same_pixels
from harness.engines.base import Capabilities, EngineSettings, Request, resolve_engine
from harness.engines.client import Deadline, EngineSide, Gate, stream
from harness.judge import Judge, case_result
from harness.known import load_known
from harness.models import DEFAULT_MODEL, image_token_id, model_fingerprint, resolve_model
from harness.plan import (
    DECODER_PREFIX,
    Variant,
    build_request,
    case_skip_reason,
    chunk_budget,
    engine_settings,
    engine_skip_reason,
    image_spans,
    load_variants,
    settings_key,
    split_spans,
)
from harness.prompt import Prompter
from harness.references import DEFAULT_DIR, ReferenceStore, Status, StoredReference
from harness.results import ResultsSink
from harness.schema import CaseResult, EngineOutput, RunResult
from harness.streams import Streams

Progress = Callable[[str], None]
REFERENCE_MODES = ("live", "stored", "auto")


class Stopwatch:
    """Wall seconds per stage of a run, summed over repeats (for `vlm-parity bench`)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - start


@dataclass
class RunConfig:
    """Everything a run needs; the CLI and the pytest plugin both build one (see `harness.options`)."""

    cases: list[Path]
    out: Path
    engine: str = "vllm"
    model: str | None = None  # None: the built-in tiny model
    engine_url: str | None = None  # a running server to attach to
    reference_model: str | None = None  # None: same as model
    reference_engine: str = "hf"
    dtype: str = "float32"
    reference_dtype: str | None = None  # None: same as dtype
    device: str = "cpu"
    reference_device: str | None = None  # None: same as device
    decoder: str = "pil"  # how the engine's images are decoded; the reference always uses PIL
    decode_effect: str | None = None  # adds the decoder-<name> variant
    variants: list[str] | None = None  # None: the default set of variants.yaml
    variants_files: list[Path] = field(default_factory=list)
    engine_options: dict[str, Any] = field(default_factory=dict)
    thresholds_file: Path | None = None
    only: set[str] | None = None  # case ids to run; None: all
    top_k: int = 5
    shard: tuple[int, int] | None = None  # (i, n): the i-th of n slices of the cases
    stall_s: float = 600.0  # an engine silent this long is stopped
    engine_restarts: int = 2  # fresh engines per engine group (and the reference) after one breaks mid-run
    run_timeout_s: float | None = None  # past this, engines are stopped and the cases not run are errors
    reference: str = "auto"  # live: run HF; stored: recorded references only; auto: stored where fresh, else live
    references_dir: Path | None = None  # None: the project's references/
    overlap: str = "auto"  # on: reference and engine groups start together; auto: on when every side is on the CPU


@dataclass
class _Group:
    """Variants that share engine settings, and so one engine start."""

    settings: EngineSettings
    variants: list[str]
    requests: list[Request] = field(default_factory=list)
    side: EngineSide = field(default_factory=EngineSide)


def execute(cfg: RunConfig, progress: Progress = print) -> RunResult:
    """Run every case on every variant; results are written as each case completes."""
    stages = Stopwatch()
    deadline = Deadline(cfg.run_timeout_s) if cfg.run_timeout_s else None
    model_name = cfg.model or DEFAULT_MODEL
    model = resolve_model(cfg.model)
    reference_model = resolve_model(cfg.reference_model) if cfg.reference_model else model
    reference_dtype = cfg.reference_dtype or cfg.dtype
    thresholds_config = config.load_config(cfg.thresholds_file)
    engine_cls = resolve_engine(cfg.engine)
    capabilities = engine_cls.capabilities_for(model)
    reference_cls = resolve_engine(cfg.reference_engine)
    names = list(cfg.variants or ["default"]) + ([DECODER_PREFIX + cfg.decode_effect] if cfg.decode_effect else [])
    variant_set = load_variants(cfg.variants_files)
    variants = variant_set.select(names)
    base_settings = EngineSettings(model, cfg.dtype, cfg.device, cfg.top_k, options=cfg.engine_options,
                                   url=cfg.engine_url)
    model_sha256 = _fingerprint(model)
    run = RunResult(provenance={
        "harness_version": __version__, "git_commit": _git_commit(),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "engine": cfg.engine, "engine_version": engine_cls.version(), "model": model, "model_name": model_name,
        "model_sha256": model_sha256, "reference_engine": cfg.reference_engine,
        "reference_model": reference_model,
        "reference_model_sha256": model_sha256 if reference_model == model else _fingerprint(reference_model),
        "dtype": cfg.dtype, "reference_dtype": reference_dtype, "device": cfg.device, "decoder": cfg.decoder,
        "engine_options": cfg.engine_options, "base_variant": variant_set.base,
        "capabilities": _jsonable(asdict(capabilities)), "cases": [str(p) for p in cfg.cases],
        "thresholds": asdict(config.resolve(thresholds_config, config.effective_dtype(cfg.dtype, reference_dtype),
                                            model)),
    }, variants=[v.describe() for v in variants])
    sink = ResultsSink(run, cfg.out, progress)
    for variant in variants:
        reason = engine_skip_reason(variant, capabilities, cfg.engine, cfg.device)
        if reason:
            run.skipped[variant.name] = reason
            progress(f"SKIP  variant {variant.name}: {reason}")

    with stages("cases"):
        cases = _load(cfg, sink, run)
    with stages("stored_references"):
        store = ReferenceStore(cfg.references_dir or DEFAULT_DIR, cfg.reference_model or model_name, reference_model,
                               cfg.reference_engine)
        stored, notes = _stored_references(cfg, cases, store, reference_dtype, variants, sink, run)
        processor_info = store.processor if stored else None
    live = [c for c in cases if c.id not in stored and (cfg.reference != "stored")]
    run.provenance.update(reference_mode=cfg.reference, references_dir=str(store.dir),
                          references_stored=len(stored), references_live=len(live))
    prompts = {case_id: ref.prompt_text for case_id, ref in stored.items()}
    prompter = None
    with stages("render"):
        if live:
            prompter = Prompter(reference_model)
            for case in live:
                try:
                    prompts[case.id] = prompter.render(case)
                except Exception as exc:
                    sink.add(case_result(case, "", "error", [f"cannot render the chat template: {exc}"]))
    cases = [c for c in cases if c.id in prompts]
    live = [c for c in live if c.id in prompts]
    chat_template = prompter.chat_template if prompter else processor_info.chat_template if processor_info else None
    base_settings = replace(base_settings, chat_template=chat_template)
    sink.write()

    reference_side = EngineSide()
    references = {case_id: ref.outputs["reference"] for case_id, ref in stored.items()}
    extra: dict[str, dict[str, EngineOutput]] = {
        c.id: {k: v for k, v in stored[c.id].outputs.items() if k != "reference"} if c.id in stored else {}
        for c in cases}
    ref_settings = EngineSettings(reference_model, reference_dtype, cfg.reference_device or cfg.device, cfg.top_k)
    ref_requests = reference_requests(live, prompts, reference_decoders(variants), reference_cls.capabilities)
    known = load_known(model_name, model, cfg.engine, engine_cls.version(), cfg.device)
    image_token = processor_info.image_token if processor_info and not store.local else image_token_id(reference_model)
    judge = Judge(thresholds_config, cfg.dtype, reference_dtype, model, image_token,
                  prompter.token_texts if prompter else processor_info.texts if processor_info else _no_texts,
                  variant_set.base, capabilities.unavailable(), known)
    by_id = {c.id: c for c in cases}
    skipped = {c.id: dict(run.skipped) for c in cases}
    details: dict[str, dict[str, dict[str, Any]]] = {c.id: {} for c in cases}
    groups = _plan(variants, cases, prompts, run.skipped, skipped, base_settings, cfg.decoder, variant_set.base)
    overlap = _overlap(cfg)
    run.provenance["overlap"] = overlap
    outputs: dict[str, dict[str, list[EngineOutput]]] = {c.id: {} for c in cases}
    waiting = Counter(r.case_id for r in ref_requests)  # outputs still to come per case, reference and engine
    for group in groups:
        waiting.update(r.case_id for r in group.requests for _ in range(r.repeats))
    missing: dict[str, str] = {}
    done: set[str] = set()
    expected = {(r.case_id, r.variant) for r in ref_requests}
    expected |= {(r.case_id, r.variant) for g in groups for r in g.requests}

    def settle(case_id: str, count: int = 1) -> None:
        """`count` outputs of the case arrived or will never come; judge it once nothing is left to wait for."""
        waiting[case_id] -= count
        if waiting[case_id] > 0 or case_id in done:
            return
        done.add(case_id)
        ref = references.get(case_id)
        if ref is None or ref.error:
            reason = (f"reference failed: {ref.error}" if ref is not None
                      else f"reference failed: {reference_side.fatal}" if reference_side.fatal
                      else "reference process ended before returning this case")
            result = case_result(by_id[case_id], prompts[case_id], "error", [reason])
            result.reference = ref
        else:
            with stages("judge"):
                result = judge(by_id[case_id], prompts[case_id], ref, variants, outputs[case_id], skipped[case_id],
                               missing, details[case_id], extra[case_id])
        with stages("results"):
            sink.add(_with_origin(result, stored, notes))

    def launch(index: int) -> None:
        """Start an engine group's stream; a group started after the reference finished drops the cases
        whose reference failed and resolves what it needed the reference for (its prefill chunk size).
        With overlap its engine starts now and computes once the job before it has finished."""
        group = groups[index]
        if reference_finished:
            failed = {r.case_id for r in group.requests if references.get(r.case_id) is None
                      or references[r.case_id].error}
            for request in group.requests:
                if request.case_id in failed:
                    settle(request.case_id, request.repeats)
            group.requests = [r for r in group.requests if r.case_id not in failed]
            spans = {c: image_spans(references[c].prompt_ids, judge.image_token)
                     for c in {r.case_id for r in group.requests}}
            _resolve_chunking(group, spans, details, run)
        launched.add(index)
        streams.launch(str(index), stream(cfg.engine, group.settings, group.requests, group.side, progress,
                                          f"engine {'+'.join(group.variants)}", cfg.stall_s, cfg.engine_restarts,
                                          deadline, go[index] if overlap else None))

    def ready(index: int) -> None:
        """The job before group `index` has finished: the group may compute (and, without overlap, start)."""
        if index < len(groups):
            go[index].open()
            if index not in launched:
                launch(index)

    for case_id in [c for c in by_id if waiting[c] == 0]:  # stored reference and every variant skipped
        settle(case_id, 0)
    # One job computes at a time: the reference, then each engine group in order. With overlap the next
    # engines start while the job before them computes (a group that needs the reference's prompt ids
    # once the reference has finished); without it, one process exists at a time.
    reference_finished = not ref_requests
    go = [Gate() for _ in groups]
    launched: set[int] = set()
    streams = Streams()
    try:
        with stages("engines"):  # reference and engines, including the judging and writing meanwhile
            streams.launch("reference", stream(cfg.reference_engine, ref_settings, ref_requests, reference_side,
                                               progress, "reference", cfg.stall_s, cfg.engine_restarts, deadline))
            for index, group in enumerate(groups):
                if overlap and (reference_finished or "prefill_chunk_tokens" not in group.settings.features):
                    launch(index)
            for name, output in streams:
                if output is not None and (output.case_id, output.variant) not in expected:
                    progress(f"[{name}] ignored an output nobody asked for: {output.case_id} {output.variant}")
                    continue
                if name == "reference" and output is not None:
                    if output.variant == "reference":
                        references[output.case_id] = output
                    else:
                        extra[output.case_id][output.variant] = output
                    settle(output.case_id)
                elif output is not None:
                    outputs[output.case_id].setdefault(output.variant, []).append(output)
                    settle(output.case_id)
                elif name == "reference":  # requests it never answered will not be answered
                    reference_finished = True
                    for request in ref_requests:
                        if request.variant == "reference" and request.case_id not in references:
                            settle(request.case_id)
                        elif request.variant != "reference" and request.variant not in extra[request.case_id]:
                            settle(request.case_id)
                    for index in range(len(groups)) if overlap else ():
                        if index not in launched:
                            launch(index)
                    ready(0)
                else:
                    group = groups[int(name)]
                    reason = (f"engine failed: {group.side.fatal}" if group.side.fatal
                              else "engine process ended before returning this variant")
                    missing.update(dict.fromkeys(group.variants, reason))
                    for request in group.requests:
                        got = sum(o.attempt < request.repeats for o in outputs[request.case_id].get(request.variant, []))
                        settle(request.case_id, request.repeats - got)
                    ready(int(name) + 1)
            for case_id in [c for c in by_id if c not in done]:  # a miscount must not lose a case
                settle(case_id, waiting[case_id])
    finally:
        for gate in go:  # an engine still waiting to compute is told the run is over
            gate.cancel()
        streams.stop()

    main = groups[0] if groups else None
    run.provenance.update(
        reference_info=reference_side.info or _stored_info(stored), engine_info=main.side.info if main else {},
        engine_run_s=main.side.run_s if main else None,
        throughput_tok_s=main.side.tokens / main.side.run_s if main and main.side.run_s and main.side.tokens else None,
        engine_groups=[{"variants": g.variants, "features": g.settings.features, "options": g.settings.options,
                        "dtype": g.settings.dtype, "requests": len(g.requests), "run_s": g.side.run_s,
                        "fatal": g.side.fatal, "restarts": g.side.restarts, "faults": g.side.faults}
                       for g in groups],
        reference_restarts=reference_side.restarts, reference_faults=reference_side.faults,
        stage_s=stages.seconds,
    )
    run.error = reference_side.fatal or (main.side.fatal if main else None)
    run.status = "failed" if run.error else "complete"
    sink.write()
    return run


def _overlap(cfg: RunConfig) -> bool:
    """Whether the reference and the engine groups may run at once: never two processes holding an
    accelerator's memory unless asked (`on`); on the CPU their start-ups overlap the other's compute."""
    if cfg.overlap != "auto":
        return cfg.overlap == "on"
    return {cfg.device, cfg.reference_device or cfg.device} == {"cpu"}


def reference_decoders(variants: Sequence[Variant]) -> list[str]:
    """The decoders, other than PIL, whose pixels some variant's reference must be re-run with."""
    return sorted({v.reference_decoder for v in variants} - {"pil"})


def reference_requests(cases: list[Case], prompts: dict[str, str], decoders: Sequence[str],
                        capabilities: Capabilities) -> list[Request]:
    """Each case once as the reference sees it; each image case also with flat grey images (a case whose
    reference barely moves cannot catch image bugs) and, for variants compared with a reference that
    decodes differently, with that decoder's pixels where they differ from PIL's."""
    requests = [Request(c.id, prompts[c.id], "reference", c.messages, tuple(map(str, c.images)),
                        max_new_tokens=c.max_new_tokens) for c in cases]
    with_images = [r for r in requests if r.images]
    if "flat-grey" in capabilities.image_inputs:
        requests += [replace(r, variant="flat-grey", image_input="flat-grey") for r in with_images]
    for decoder in decoders:
        requests += [replace(r, variant=f"reference-{decoder}", decoder=decoder) for r in with_images
                     if not same_pixels(r.images, decoder)]
    return requests


def _stored_references(cfg: RunConfig, cases: list[Case], store: ReferenceStore, dtype: str,
                       variants: list[Variant], sink: ResultsSink,
                       run: RunResult) -> tuple[dict[str, StoredReference], dict[str, Status]]:
    """The fresh stored references by case id, and the status of each stale case.

    `stored` mode makes a stale or missing reference an error naming what changed; `auto`
    runs the live reference instead, with a case warning naming what changed when the
    stored one is stale (a missing one changed nothing: one run warning). `live` uses none."""
    if cfg.reference == "live":
        return {}, {}
    needs = reference_decoders(variants)
    stored: dict[str, StoredReference] = {}
    notes: dict[str, Status] = {}
    for case in cases:
        status = store.status(case, cfg.top_k, dtype, needs)
        if status.state == "fresh" and status.reference:
            # a renamed case's reference was recorded under its old id
            ref = status.reference
            ref.outputs = {name: replace(o, case_id=case.id) for name, o in ref.outputs.items()}
            stored[case.id] = ref
        elif cfg.reference == "stored":
            result = case_result(case, "", "error", [f"reference_stale: {status.describe()}"])
            result.reference_stale = status.changes or ["no stored reference"]
            sink.add(result)
        elif status.state == "stale":
            notes[case.id] = status
    if stored and not store.local:
        run.warnings.append(f"reference model {store.model} is not on this machine: the stored references' weights "
                            "hash was not checked against it (their processor files are taken as recorded)")
    missing = [c.id for c in cases if c.id not in stored and c.id not in notes]
    if cfg.reference == "auto" and missing and store.dir.is_dir():
        run.warnings.append(f"{len(missing)} cases have no stored reference in {store.dir} and ran the live reference "
                            f"({', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''}): `vlm-parity record` "
                            "stores them")
    return stored, notes


def _with_origin(result: CaseResult, stored: dict[str, StoredReference], notes: dict[str, Status]) -> CaseResult:
    """Say where the case's reference came from, and why a stored one was not used."""
    ref = stored.get(result.case_id)
    result.reference_source = f"stored: {ref.case_id}.{ref.key[:16]}.json" if ref else "live"
    status = notes.get(result.case_id)
    if status is not None:
        result.warnings.insert(0, f"stored reference {status.describe()}: the reference ran live")
        result.reference_stale = status.changes
    return result


def _stored_info(stored: dict[str, StoredReference]) -> dict[str, Any]:
    """With no live reference, what the stored ones say of how they were computed (one recording's)."""
    first = next(iter(stored.values()), None)
    return {"stored": True, **first.provenance} if first else {}


def _no_texts(outputs: list[EngineOutput]) -> dict[str, str]:
    """No processor and no stored one: the report shows token ids only."""
    return {}


def _load(cfg: RunConfig, sink: ResultsSink, run: RunResult) -> list[Case]:
    """The selected cases; invalid and unknown ones become error results."""
    loaded = load_cases(cfg.cases)
    problems: dict[str, list[CaseProblem]] = {}
    for problem in loaded.problems:
        problems.setdefault(problem_id(problem), []).append(problem)
    mine = (lambda case_id: True) if cfg.shard is None else (lambda case_id: in_shard(case_id, *cfg.shard))
    for case_id, found in problems.items():
        if (cfg.only is None or case_id in cfg.only) and mine(case_id):
            sink.add(CaseResult(case_id=case_id, verdict="error", reasons=[f"invalid case: {p}" for p in found],
                                source=str(found[0].file)))
    for case_id in sorted(c for c in (cfg.only or set()) - {c.id for c in loaded.cases} - set(problems) if mine(c)):
        sink.add(CaseResult(case_id=case_id, verdict="error", reasons=[f"no case {case_id!r} in {cfg.cases}"]))
    # A partial run (--case, pytest -k) is no baseline for the nightly history; a shard is one until merged.
    run.provenance["partial"] = cfg.only is not None and not {c.id for c in loaded.cases} | set(problems) <= cfg.only
    cases = [c for c in loaded.cases if cfg.only is None or c.id in cfg.only]
    if cfg.shard:
        run.provenance.update(shard=list(cfg.shard), plan_cases=sorted(c.id for c in cases))
    return [c for c in cases if mine(c.id)]


def in_shard(case_id: str, index: int, total: int) -> bool:
    """Deterministic, order-free slicing: a case's shard is a hash of its id."""
    return int(hashlib.sha256(case_id.encode()).hexdigest(), 16) % total == index - 1


def _plan(variants: list[Variant], cases: list[Case], prompts: dict[str, str], engine_skips: dict[str, str],
          case_skips: dict[str, dict[str, str]], base_settings: EngineSettings, decoder: str,
          base: str) -> list[_Group]:
    """Requests grouped by effective engine settings, the base variant's group first."""
    groups: dict[str, _Group] = {}
    for variant in variants:
        if variant.name in engine_skips:
            continue
        settings = engine_settings(variant, base_settings)
        group = groups.setdefault(settings_key(settings), _Group(settings, []))
        group.variants.append(variant.name)
        for case in cases:
            reason = case_skip_reason(variant, case)
            if reason:
                case_skips[case.id][variant.name] = reason
                continue
            group.requests.append(build_request(variant, case, prompts[case.id], decoder))
    return sorted((g for g in groups.values() if g.requests), key=lambda g: base not in g.variants)


def _resolve_chunking(group: _Group, spans: dict[str, list[tuple[int, int]]],
                      details: dict[str, dict[str, dict[str, Any]]], run: RunResult) -> None:
    """Pick the prefill chunk size of an `auto` group from the cases' image spans and record,
    per case, which spans it splits; a plan that splits none is not exercising its path."""
    tokens = group.settings.features.get("prefill_chunk_tokens")
    if tokens is None:
        return
    cases = sorted({r.case_id for r in group.requests})
    if tokens == "auto":
        tokens = chunk_budget([spans[c] for c in cases])
        group.settings = replace(group.settings, features={**group.settings.features, "prefill_chunk_tokens": tokens})
    split = {c: split_spans(spans[c], tokens) for c in cases}
    for name in group.variants:
        for case_id in cases:
            details[case_id][name] = {"chunk_tokens": tokens, "split_spans": split[case_id]}
        if not any(split.values()):
            run.warnings.append(f"variant {name}: prefill chunks of {tokens} tokens split no image span: "
                                "the variant does not exercise its path on these cases")


def problem_id(problem: CaseProblem) -> str:
    """The id a case problem is reported under; a file-level problem is named by its file."""
    return problem.case_id or f"<{problem.file}>"


def _jsonable(value: Any) -> Any:
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


def _fingerprint(model: str) -> str | None:
    """Weights hash of a local checkpoint; None for a hub id (its revision names it)."""
    return model_fingerprint(Path(model)) if Path(model).is_dir() else None


def _git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                              timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
