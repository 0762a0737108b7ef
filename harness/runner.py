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
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from harness import __version__, config
from harness.cases import Case, CaseProblem, load_cases
from harness.decode import same_pixels
from harness.engines.base import Capabilities, EngineSettings, Request, resolve_engine
from harness.engines.client import EngineSide, stream
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
from harness.results import ResultsSink
from harness.schema import CaseResult, EngineOutput, RunResult

Progress = Callable[[str], None]


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


@dataclass
class _Group:
    """Variants that share engine settings, and so one engine start."""

    settings: EngineSettings
    variants: list[str]
    requests: list[Request] = field(default_factory=list)
    side: EngineSide = field(default_factory=EngineSide)


def execute(cfg: RunConfig, progress: Progress = print) -> RunResult:
    """Run every case on every variant; results are written as each case completes."""
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
    run = RunResult(provenance={
        "harness_version": __version__, "git_commit": _git_commit(),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "engine": cfg.engine, "engine_version": engine_cls.version(), "model": model, "model_name": model_name,
        "model_sha256": _fingerprint(model), "reference_engine": cfg.reference_engine,
        "reference_model": reference_model, "reference_model_sha256": _fingerprint(reference_model),
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

    cases = _load(cfg, sink, run)
    prompter = Prompter(reference_model)
    base_settings = replace(base_settings, chat_template=prompter.chat_template)
    prompts: dict[str, str] = {}
    for case in cases:
        try:
            prompts[case.id] = prompter.render(case)
        except Exception as exc:
            sink.add(case_result(case, "", "error", [f"cannot render the chat template: {exc}"]))
    cases = [c for c in cases if c.id in prompts]
    sink.write()

    reference_side = EngineSide()
    references: dict[str, EngineOutput] = {}
    ref_settings = EngineSettings(reference_model, reference_dtype, cfg.reference_device or cfg.device, cfg.top_k)
    ref_requests = _reference_requests(cases, prompts, variants, reference_cls.capabilities)
    extra: dict[str, dict[str, EngineOutput]] = {c.id: {} for c in cases}
    for output in stream(cfg.reference_engine, ref_settings, ref_requests, reference_side, progress, "reference",
                         cfg.stall_s):
        if output.variant == "reference":
            references[output.case_id] = output
        else:
            extra[output.case_id][output.variant] = output

    known = load_known(model_name, model, cfg.engine, engine_cls.version(), cfg.device)
    judge = Judge(thresholds_config, cfg.dtype, reference_dtype, model, image_token_id(reference_model), prompter,
                  variant_set.base, capabilities.unavailable(), known)
    by_id = {c.id: c for c in cases}
    runnable = [c for c in cases if c.id in references and not references[c.id].error]
    skipped = {c.id: dict(run.skipped) for c in cases}
    spans = {c.id: image_spans(references[c.id].prompt_ids, judge.image_token) for c in runnable}
    details: dict[str, dict[str, dict[str, Any]]] = {c.id: {} for c in runnable}
    groups = _plan(variants, runnable, prompts, run.skipped, skipped, base_settings, cfg.decoder, variant_set.base)
    for group in groups:
        _resolve_chunking(group, spans, details, run)
    outputs: dict[str, dict[str, list[EngineOutput]]] = {c.id: {} for c in runnable}
    pending = {c.id: 0 for c in runnable}
    for group in groups:
        for request in group.requests:
            pending[request.case_id] += request.repeats
    missing: dict[str, str] = {}

    def finish(case_id: str) -> None:
        del pending[case_id]
        sink.add(judge(by_id[case_id], prompts[case_id], references[case_id], variants, outputs[case_id],
                       skipped[case_id], missing, details[case_id], extra[case_id]))

    for case_id in [c for c, n in pending.items() if n == 0]:  # every variant skipped for this case
        finish(case_id)
    for group in groups:
        for output in stream(cfg.engine, group.settings, group.requests, group.side, progress,
                             f"engine {'+'.join(group.variants)}", cfg.stall_s):
            if output.case_id not in pending:
                continue
            outputs[output.case_id].setdefault(output.variant, []).append(output)
            pending[output.case_id] -= 1
            if pending[output.case_id] == 0:
                finish(output.case_id)
        if group.side.fatal:
            missing.update(dict.fromkeys(group.variants, f"engine failed: {group.side.fatal}"))
        else:
            missing.update(dict.fromkeys(group.variants, "engine process ended before returning this variant"))
    for case_id in list(pending):
        finish(case_id)

    for case in cases:
        if case.id not in references or references[case.id].error:
            ref = references.get(case.id)
            reason = (f"reference failed: {ref.error}" if ref is not None
                      else f"reference failed: {reference_side.fatal}" if reference_side.fatal
                      else "reference process ended before returning this case")
            result = case_result(case, prompts[case.id], "error", [reason])
            result.reference = ref
            sink.add(result)

    main = groups[0] if groups else None
    run.provenance.update(
        reference_info=reference_side.info, engine_info=main.side.info if main else {},
        engine_run_s=main.side.run_s if main else None,
        throughput_tok_s=main.side.tokens / main.side.run_s if main and main.side.run_s and main.side.tokens else None,
        engine_groups=[{"variants": g.variants, "features": g.settings.features, "options": g.settings.options,
                        "dtype": g.settings.dtype, "requests": len(g.requests), "run_s": g.side.run_s,
                        "fatal": g.side.fatal} for g in groups],
    )
    run.error = reference_side.fatal or (main.side.fatal if main else None)
    run.status = "failed" if run.error else "complete"
    sink.write()
    return run


def _reference_requests(cases: list[Case], prompts: dict[str, str], variants: list[Variant],
                        capabilities: Capabilities) -> list[Request]:
    """Each case once as the reference sees it; each image case also with flat grey images (a case whose
    reference barely moves cannot catch image bugs) and, for variants compared with a reference that
    decodes differently, with that decoder's pixels where they differ from PIL's."""
    requests = [Request(c.id, prompts[c.id], "reference", c.messages, tuple(map(str, c.images)),
                        max_new_tokens=c.max_new_tokens) for c in cases]
    with_images = [r for r in requests if r.images]
    if "flat-grey" in capabilities.image_inputs:
        requests += [replace(r, variant="flat-grey", image_input="flat-grey") for r in with_images]
    for decoder in sorted({v.reference_decoder for v in variants} - {"pil"}):
        requests += [replace(r, variant=f"reference-{decoder}", decoder=decoder) for r in with_images
                     if not same_pixels(r.images, decoder)]
    return requests


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
