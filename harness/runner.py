"""A parity run: plan it, then feed the engines' merged output streams to the ledger and the scheduler.

`execute` is the loop; the decisions live in small objects tested without a process: the plan
(`harness.run.plan`: what runs), the ledger (`harness.run.ledger`: what each case still waits for), the
scheduler (`harness.run.scheduler`: which engine computes when). `Session` holds one run's state and
turns their answers into engine streams and results. Each case is judged and written the moment the
ledger closes it; every failure below the run itself becomes an `error` result with its reason.
"""
from __future__ import annotations

import datetime as dt
import functools
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from harness import __version__, config
from harness.config import ConfigError
from harness.core.hardware import cpu
from harness.core.notes import error_fields, note, stream_end
from harness.core.provenance import EngineGroupInfo, Provenance
from harness.core.schema import CaseResult, EngineOutput, Note, RunResult, SuiteShift
from harness.decode_diff import case_pixel_deltas
from harness.engines.base import EngineSettings, Request
from harness.engines.client import Deadline, EngineSide, Gate, stream
from harness.inputs.cases import Case, load_cases
from harness.inputs.detokenize import Detokenizer
from harness.inputs.models import image_token_id, model_fingerprint, video_token_id
from harness.inputs.prompt import Prompter
from harness.judging.judge import CaseInputs, Judge, answers, case_result
from harness.judging.suite import SuiteRule, cell_ratios, sample_dtype, shift_test
from harness.localize.run import MAX_PROBED, localize, which_to_localize
from harness.publish.console import Console, Lines, as_console, quiet_third_parties
from harness.publish.gate import gate_policy, load_gate_config
from harness.publish.outcome import Outcome, conclude
from harness.publish.report import publish
from harness.publish.report.decode_effect import decode_effect_markdown
from harness.publish.report.summary import write_step_summary
from harness.publish.report.thumbnails import thumbnail
from harness.publish.results import ResultsSink, write_results
from harness.repro import write_repros
from harness.run.collector import now_and_then, young_only
from harness.run.known import known_reference_failure
from harness.run.ledger import REFERENCE, REFERENCE_SIDE, SCORING, CaseEntry, CaseLedger
from harness.run.observe import Observer
from harness.run.options import RunConfig, comma_list
from harness.run.plan import (
    CaseSelection,
    RunPlan,
    image_spans,
    make_plan,
    plan_probes,
    resolve_chunking,
)
from harness.run.references import (
    DEFAULT_DIR,
    ReferenceStore,
    Status,
    StoredReference,
    clean_sample_path,
    load_clean_sample,
)
from harness.run.scheduler import Action, Launch, Open, Scheduler
from harness.run.spool import Spool
from harness.run.streams import Streams
from harness.run.variants import scored_name

__all__ = ["Finished", "RunConfig", "execute", "run_and_publish"]
# How one engine's stream is started: the worker-process client by default (same signature).
Launcher = Callable[..., Iterator[EngineOutput]]


def execute(run: RunConfig | RunPlan, progress: Console | Lines = print, observer: Observer | None = None,
            launcher: Launcher = stream) -> RunResult:
    """Run every case on every variant; results are written as each case completes. `run` is the config or
    its plan (`harness.run.plan.make_plan`, for a front end that planned already: the pytest plugin); `progress`
    is the run's console (`harness.publish.console`) or a callable that takes its lines; `launcher` starts one
    engine's stream (`harness.engines.client.stream`: a worker process; tests run engines in-process)."""
    observer = observer or Observer()
    if isinstance(run, RunPlan):
        plan = run
    else:
        with observer.stage("case_load"):
            loaded = load_cases(run.cases)
        with observer.stage("setup"):
            plan = make_plan(run, loaded)
    cfg = plan.cfg
    session = Session.prepare(plan, as_console(progress), observer, launcher)
    ledger, scheduler = session.ledger, session.scheduler
    session.finish(ledger.opening())
    streams = Streams()
    try:
        with observer.stage("engines"), young_only():  # the engines' work, with the judging and writing meanwhile
            if session.plan.reference_requests:
                session.launch_reference(streams)
            session.apply(scheduler.start(), streams)
            for source, output in streams:
                if output is not None:
                    session.console.output(source, output.case_id, output.variant, output.error)
                    session.finish(ledger.accept(source, session.spool.put(output)))
                    continue
                session.closed(source)
                session.finish(ledger.stream_ended(source, session.end_reason(source)))
                events = scheduler.reference_finished() if source == REFERENCE else scheduler.group_finished(
                    scheduler.scoring if source == SCORING else int(source))
                session.apply(events, streams)
    finally:
        session.stop(streams)
        session.spool.close()
    if cfg.localize != "off":
        with observer.stage("localize"):
            session.localize()
    return session.close()


@dataclass
class Finished:
    """A run executed and published: its results, the gate's and the history's outcome, the report."""

    run: RunResult
    outcome: Outcome
    html: Path

    @property
    def exit_code(self) -> int:
        """0 every case passed, 1 some case failed or errored, 2 the run itself did not complete."""
        if self.run.status != "complete" or not self.run.cases:
            return 2
        return 0 if self.run.verdict == "pass" else 1


def run_and_publish(run: RunConfig | RunPlan, progress: Console | Lines = print, observer: Observer | None = None,
                    launcher: Launcher = stream) -> Finished:
    """A run as every front end takes it (`vlm-parity run`, `pytest -m parity`, the bench): the gate config
    checked before any engine starts, the run, then its outcome (gate, history), report, tables and step
    summary, and the console's closing summary."""
    cfg = run.cfg if isinstance(run, RunPlan) else run
    observer = observer or Observer()
    console = as_console(progress)
    gate = gate_policy(load_gate_config(cfg.gate_config), cfg.policy)
    start = time.perf_counter()
    result = execute(run, console, observer, launcher)
    with observer.stage("report"):
        outcome = conclude(result, cfg.history, cfg.policy, gate)
        if cfg.history is not None:  # the history may have marked known cells new to this run
            write_results(result, cfg.out)
        repro_root = cfg.repro_dir or cfg.out / "repro"
        if cfg.repro_dir is None:  # the run's own folder: no earlier run's reproductions linked as this one's
            shutil.rmtree(repro_root, ignore_errors=True)
        write_repros(result, repro_root, cfg.out / "results.json", every=cfg.repro_dir is not None)
        published = publish(result, cfg.out, outcome, repro_root, detail=cfg.detail)
        write_step_summary(result, outcome)
    console.finish(result, published.html, outcome.regressions, outcome.diagnosis, time.perf_counter() - start)
    return Finished(result, outcome, published.html)


def run_command(cfg: RunConfig, observer: Observer | None = None) -> int:
    """`vlm-parity run` (and the bench's measured run, the same way): the console, the run and its report;
    0 every case passed, 1 some case failed or errored, 2 the run itself could not complete."""
    console = Console(verbose=cfg.verbose)
    if not cfg.verbose:
        quiet_third_parties()
    try:
        done = run_and_publish(cfg, console, observer)
    except ConfigError as exc:  # a thresholds, variants or gate file that names something unknown: the file and key
        console.finish_failed(f"vlm-parity: {exc}")
        return 2
    except Exception as exc:  # the run itself could not complete; per-case failures never get here
        console.finish_failed(f"vlm-parity: run failed: {type(exc).__name__}: {exc}")
        return 2
    if cfg.decode_effect:
        console.print(f"decode-path effect ({cfg.decode_effect} pixels to the engine, PIL to the reference):\n"
                      f"{decode_effect_markdown(done.run, cfg.decode_effect)}")
    return done.exit_code


@dataclass
class Stored:
    """What the store gave the run: fresh references by case, why others were not used, and errors owed."""

    references: dict[str, StoredReference] = field(default_factory=dict)
    notes: dict[str, Status] = field(default_factory=dict)
    errors: list[CaseResult] = field(default_factory=list)
    warnings: list[Note] = field(default_factory=list)  # the run's


@dataclass
class Session:
    """One run in progress: its plan, ledger and scheduler, the engines' sides, and the results sink."""

    plan: RunPlan
    run: RunResult
    sink: ResultsSink
    judge: Judge
    prompts: dict[str, str]
    stored: Stored
    ledger: CaseLedger
    scheduler: Scheduler
    console: Console
    observer: Observer
    spool: Spool
    launcher: Launcher = stream
    deadline: Deadline | None = None
    reference_side: EngineSide = field(default_factory=EngineSide)
    sides: list[EngineSide] = field(default_factory=list)  # each engine group's, then the scoring's
    gates: list[Gate] = field(default_factory=list)
    details: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    streams: dict[str, tuple[str, Path | None]] = field(default_factory=dict)  # source -> its role and log

    @property
    def cfg(self) -> RunConfig:
        return self.plan.cfg

    @functools.cached_property
    def cases(self) -> dict[str, Case]:
        return {c.id: c for c in self.plan.cases}

    @classmethod
    def prepare(cls, plan: RunPlan, console: Console, observer: Observer, launcher: Launcher = stream) -> Session:
        """Everything before the first engine starts: stored references, prompts, the plan's requests."""
        cfg, reference = plan.cfg, plan.reference
        run = RunResult(provenance=_provenance(plan))
        sink = ResultsSink(run, cfg.out)
        _unrunnable(plan.selection, sink, console)
        store = ReferenceStore(cfg.references_dir or DEFAULT_DIR, reference.model_name, reference.model,
                               reference.engine)
        spool = Spool(cfg.out)
        with observer.stage("stored_references"):
            stored = _stored_references(plan, store, spool)
        for result in stored.errors:
            sink.add(result)
            console.case(result)
        cases = [c for c in plan.cases if c.id not in {r.case_id for r in stored.errors}]
        with observer.stage("render"):
            prompts, prompter = _render(cases, stored, reference.model, sink, console)
        processor = store.processor if stored.references else None
        chat_template = prompter.chat_template if prompter else processor.chat_template if processor else None
        with observer.stage("plan"):
            plan = plan.dispatch(prompts, list(stored.references), chat_template)
        p = run.provenance
        p.references_dir, p.references_stored = str(store.dir), len(stored.references)
        p.references_live = len(plan.cases) - len(stored.references)
        run.variants, run.skipped = [v.describe() for v in plan.variants], dict(plan.skipped)
        run.notes += stored.warnings + ([note("no_floor", reason=plan.no_floor)] if plan.no_floor else [])
        sampled = [v.name for v in plan.sampled]
        if sampled and not plan.scored:
            why = (f"the reference engine {reference.engine!r} cannot score another engine's tokens"
                   if not reference.capabilities.scores else "the engine returns no output ids")
            run.notes.append(note("sampled_not_scored", why=why, variants=sampled))
        unsupported = plan.unsupported_features
        run.notes += [note("unsupported_base_features", engine=plan.engine.engine, features=unsupported)] \
            if unsupported else []
        for name, reason in plan.skipped.items():
            console(f"SKIP  variant {name}: {reason}")
        image_token = (processor.image_token if processor and not store.local else image_token_id(reference.model))
        texts = prompter.token_texts if prompter else processor.texts if processor else _no_texts
        judge = Judge(plan, image_token, video_token_id(reference.model), texts, Detokenizer(reference.model))
        ledger = CaseLedger(plan.expected(), {c: s.outputs for c, s in stored.references.items()})
        for reference_file in stored.references.values():  # the ledger holds them now, and lets go once judged
            reference_file.outputs = {}
        scheduler = Scheduler([g.needs_reference for g in plan.groups], plan.overlap, bool(plan.reference_requests),
                              bool(plan.scored))
        sink.write()
        return cls(plan, run, sink, judge, prompts, stored, ledger, scheduler, console, observer, spool, launcher,
                   Deadline(cfg.run_timeout_s) if cfg.run_timeout_s else None,
                   sides=[EngineSide() for _ in range(scheduler.jobs)], gates=[Gate() for _ in range(scheduler.jobs)],
                   details={c.id: {} for c in plan.cases})

    def launch_reference(self, streams: Streams) -> None:
        self._launch(streams, REFERENCE, self.plan.reference.engine, self.plan.reference_settings(),
                     self.plan.reference_requests, self.reference_side, "reference", None)

    def localize(self) -> None:
        """A stage ladder for each failing case (and each case asked for): where inside the model it first
        differs. A run with no such case starts nothing."""
        cfg, plan = self.cfg, self.plan
        asked = [] if cfg.localize == "failing" else comma_list(cfg.localize)
        results = {r.case_id: r for r in self.run.cases}
        which = which_to_localize(list(results.values()), asked, [v.name for v in self.plan.variants])
        probes = plan_probes(plan, which, self.prompts)
        if not probes:
            return
        results.update({p.case_id: self.sink.store.load(results[p.case_id]) for p in probes})
        failing = sum(r.verdict == "fail" for r in results.values())
        more = (f" (the first {MAX_PROBED} of {failing} failing; `--localize CASE,...` for others)"
                if failing > MAX_PROBED else "")
        self.console.note(f"localizing {len(probes)} case{'s' if len(probes) > 1 else ''}{more}: a probe engine and "
                          "the reference re-run each with hooks")
        th = config.resolve(plan.thresholds, config.effective_dtype(plan.engine.dtype, plan.reference.dtype))
        k = config.multiple(th, "prefill_max", "k")  # stages are compared as prompt logprobs are
        media = {t: kind for t, kind in ((self.judge.image_token, "image"), (self.judge.video_token, "video"))
                 if t is not None}
        ladders = localize(probes, results, plan.engine.engine, plan.reference.engine, plan.reference_settings(),
                           cfg.out / "logs", k, {v.name: plan.dtype_of(v) for v in plan.variants}, media,
                           plan.engine.capabilities)
        for case_id, found in ladders.items():
            results[case_id].variants[found.variant].ladder = found
            self.sink.update(results[case_id])
            self.console.ladder(results[case_id])

    def apply(self, actions: Sequence[Action], streams: Streams) -> None:
        """The scheduler's actions: open a held engine's gate, or start an engine group's stream or the scoring's."""
        for action in actions:
            scoring = action.group == self.scheduler.scoring
            gate = self.gates[action.group]
            if isinstance(action, Open) and scoring and gate.requests is None:  # started early: the answers are in
                requests = self.scoring_requests()
                self.console.stream_opened(SCORING, "scoring", len(requests))
                gate.open(requests)
            elif isinstance(action, Open):
                gate.open()
            elif scoring:  # started early (held), it is given its requests when it may compute
                gate.requests = None if action.held else self.scoring_requests()
                self._launch(streams, SCORING, self.plan.reference.engine, self.plan.reference_settings(),
                             gate.requests, self.sides[action.group], "scoring", gate if action.held else None)
            else:
                self._launch_group(streams, action)

    def _launch_group(self, streams: Streams, action: Launch) -> None:
        """An engine group's stream (first dropping the cases whose reference failed and choosing what it needed
        the reference for)."""
        group = self.plan.groups[action.group]
        if group.needs_reference:
            group = self._resolve(action.group)
        self._launch(streams, str(action.group), self.plan.engine.engine, group.settings, group.requests,
                     self.sides[action.group], f"engine {'+'.join(group.variants)}",
                     self.gates[action.group] if self.scheduler.overlap else None)

    def scoring_requests(self) -> list[Request]:
        """The reference's requests scoring every sampled answer's tokens (the engine groups have finished: the
        answers are in); an answer that never came is withdrawn, with the reason."""
        plan = self.plan
        requests = []
        for case_id in self.ledger.open_cases():
            entry = self.ledger.entry(case_id)
            for variant in plan.scored:
                got = [self.spool.full(o) for o in entry.outputs.get(variant.name, [])]
                ids = [a.output_ids if a.output_ids and not a.error else None for a in answers(got)]
                ids += [None] * (variant.answers - len(ids))
                requests += plan.scoring_requests(self.cases[case_id], variant, ids, self.prompts[case_id])
                lost = [(scored_name(variant.name, i), 0) for i, a in enumerate(ids) if a is None]
                self.finish(self.ledger.withdraw([case_id], SCORING, note("no_output"), lost))
        return requests

    def _resolve(self, index: int) -> Any:
        """A group launched after the reference: the cases without a reference are withdrawn from it, and its
        prefill chunk size is chosen from the others' image spans."""
        group = self.plan.groups[index]
        failed = {r.case_id for r in group.requests if (ref := self.ledger.entry(r.case_id).reference) is None
                  or ref.error}
        self.finish(self.ledger.withdraw(sorted(failed), str(index), note("not_sent")))
        group = replace(group, requests=[r for r in group.requests if r.case_id not in failed])
        spans = {c: image_spans(self.spool.full(self.ledger.entry(c).reference).prompt_ids,  # type: ignore
                                self.judge.image_token)
                 for c in {r.case_id for r in group.requests}}
        group, chunking = resolve_chunking(group, spans)
        if chunking is not None:
            for name in group.variants:
                for case_id, split in chunking.split.items():
                    self.details[case_id][name] = {"chunk_tokens": chunking.tokens, "split_spans": split}
                if not any(chunking.split.values()):
                    self.run.notes.append(note("chunking_split_nothing", variant=name, chunk_tokens=chunking.tokens))
        self.plan.groups[index] = group
        return group

    def _launch(self, streams: Streams, name: str, engine: str, settings: EngineSettings, requests: list[Any] | None,
                side: EngineSide, role: str, gate: Gate | None) -> None:
        """One engine's stream; its own output goes to OUT/logs/<role>.log unless the run is verbose."""
        log = None if self.cfg.verbose else self.cfg.out / "logs" / f"{re.sub(r'[^A-Za-z0-9.+-]+', '-', role)}.log"
        self.streams[name] = (role, log)
        if requests is not None:  # else when they are given (`scoring_requests`)
            self.console.stream_opened(name, role, sum(r.repeats for r in requests))
        outputs = self.launcher(engine, settings, requests, side, self.console, role, self.cfg.stall_s,
                                self.cfg.engine_restarts, self.deadline, gate, log=log)
        streams.launch(name, self.observer.stream(role, engine, settings, requests, outputs, side))

    def closed(self, source: str) -> None:
        """A stream ended: an engine that failed is shown with the end of its log."""
        role, log = self.streams[source]
        self.console.stream_closed(source, role, self._side(source).fatal, log)

    def end_reason(self, source: str) -> Note:
        """Why what a finished stream still owed will never come."""
        return stream_end(source in REFERENCE_SIDE, self._side(source).fatal)

    def _side(self, source: str) -> EngineSide:
        if source == REFERENCE:
            return self.reference_side
        return self.sides[self.scheduler.scoring if source == SCORING else int(source)]

    def finish(self, case_ids: Sequence[str]) -> None:
        """Judge and write each closed case (pixel deltas and thumbnails computed first)."""
        for case_id in case_ids:
            entry = self._read_back(self.ledger.entry(case_id))
            case = self.cases[case_id]
            with self.observer.stage("decode_deltas"):
                decoders = {d for v in self.plan.variants if (d := v.request.get("decoder")) and d != "pil"}
                deltas = {d: case_pixel_deltas(case.images, d) for d in decoders} if case.images else {}
                thumbs = [thumbnail(p) for p in case.images] + [thumbnail(frames[0]) for frames in case.videos]
            with self.observer.stage("judge"):
                result = self._judge(case, entry, deltas, thumbs)
            with self.observer.stage("results_write"):
                self.sink.add(_with_origin(result, self.stored))
            self.console.case(result)
            self._drop(self.ledger.entry(case_id))
            self.ledger.release(case_id)
            now_and_then(len(self.run.cases))
        for line in self.ledger.ignored:
            self.console.warn(f"ignored an output nobody asked for: {line}")
        self.ledger.ignored.clear()

    def _read_back(self, entry: CaseEntry) -> CaseEntry:
        """The closed case's outputs as they arrived, from the spool."""
        return replace(entry, reference=self.spool.full(entry.reference),
                       extra={n: self.spool.full(o) for n, o in entry.extra.items()},
                       outputs={n: [self.spool.full(o) for o in os] for n, os in entry.outputs.items()})

    def _drop(self, entry: CaseEntry) -> None:
        for output in [entry.reference, *entry.extra.values(), *(o for os in entry.outputs.values() for o in os)]:
            self.spool.drop(output)

    def _judge(self, case: Case, entry: CaseEntry, deltas: dict[str, Any], thumbs: list[str]) -> CaseResult:
        ref = entry.reference
        if ref is None or ref.error:
            why = (note("reference_failed", **error_fields(ref.error)) if ref is not None and ref.error
                   else entry.missing.get(REFERENCE, stream_end(True, self.reference_side.fatal)))
            entry_known = known_reference_failure(case, why, self.plan.known)
            if entry_known is None:
                result = case_result(case, self.prompts[case.id], "error", [why], thumbs)
            else:  # a reference bug on record: known, with its record, never a pass
                result = case_result(case, self.prompts[case.id], "known", [
                    note("known_failure", reason=entry_known.reason, reproduction=entry_known.reproduction), why],
                    thumbs)
            result.reference = ref
            return result
        stored = self.stored.references.get(case.id)
        return self.judge(CaseInputs(case, self.prompts[case.id], ref, entry.outputs, entry.extra,
                                     self.plan.case_skips[case.id], entry.missing, self.details[case.id],
                                     stored.floors if stored else None, deltas, thumbs), self.plan.variants)

    def stop(self, streams: Streams) -> None:
        for gate in self.gates:  # an engine still waiting to compute is told the run is over
            gate.cancel()
        streams.stop()

    def close(self) -> RunResult:
        """The run's final provenance and status, written with the results."""
        run, p = self.run, self.run.provenance
        main = self.sides[0] if self.sides else None
        p.reference_info = self.reference_side.info or _stored_info(self.stored.references)
        p.engine_info = main.info if main else {}
        p.engine_run_s = main.run_s if main else None
        p.throughput_tok_s = main.tokens / main.run_s if main and main.run_s and main.tokens else None
        p.engine_groups = [EngineGroupInfo(g.variants, g.settings.features, g.settings.options, g.settings.dtype,
                                           len(g.requests), s.run_s, s.fatal, s.restarts, s.faults)
                           for g, s in zip(self.plan.groups, self.sides)]
        p.reference_restarts, p.reference_faults = self.reference_side.restarts, self.reference_side.faults
        p.stage_s = dict(self.observer.seconds)
        run.error = self.reference_side.fatal or (main.fatal if main else None)
        run.status = "failed" if run.error else "complete"
        if not run.error:
            run.suite = self.suite()
        self.sink.write()
        return run

    def suite(self) -> list[SuiteShift]:
        """The whole suite against the clean sample recorded for this reference model, engine and dtype (`vlm-parity
        calibrate --record`); nothing without one."""
        plan = self.plan
        if plan.selection.partial or self.cfg.shard:  # part of the suite: its cells are not the sample's
            return []
        path = clean_sample_path(self.cfg.references_dir or DEFAULT_DIR, plan.reference.model_name, plan.engine.engine,
                                 plan.engine.device, sample_dtype(plan.engine.dtype, plan.reference.dtype))
        clean = load_clean_sample(path)
        if clean is None:
            return []
        rule = SuiteRule.of(config.resolve_section(plan.thresholds, "suite"))
        return shift_test(cell_ratios(self.run), clean["ratios"], f"{path.parent.parent.name}/clean/{path.name}", rule)


def _provenance(plan: RunPlan) -> Provenance:
    cfg, engine, reference, selection = plan.cfg, plan.engine, plan.reference, plan.selection
    sha = _fingerprint(engine.model)
    return Provenance(
        harness_version=__version__, git_commit=_git_commit(),
        date=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), engine=engine.engine,
        engine_version=engine.adapter.version(), model=engine.model, model_name=engine.model_name, model_sha256=sha,
        reference_engine=reference.engine, reference_model=reference.model,
        reference_model_sha256=sha if reference.model == engine.model else _fingerprint(reference.model),
        dtype=engine.dtype, reference_dtype=reference.dtype, device=engine.device, decoder=cfg.decoder,
        engine_options=cfg.engine_options, base_variant=plan.base, capabilities=_jsonable(asdict(engine.capabilities)),
        cases=[str(p) for p in cfg.cases], reference_mode=cfg.reference, hardware=cpu(),
        thresholds=asdict(config.resolve(plan.thresholds, config.effective_dtype(engine.dtype, reference.dtype),
                                         engine.model)),
        partial=selection.partial, shard=list(cfg.shard) if cfg.shard else None,
        plan_cases=selection.plan_cases if cfg.shard else [], overlap=plan.overlap)


def _unrunnable(selection: CaseSelection, sink: ResultsSink, console: Console) -> None:
    """The results owed for cases that never reach an engine: invalid ones are errors, cases with media the
    model does not take are skipped."""
    for case_id, reasons in selection.errors.items():
        result = CaseResult(case_id=case_id, verdict="error", reasons=reasons, source=selection.sources.get(case_id, ""))
        sink.add(result)
        console.case(result)
    for case_id, reason in selection.skipped.items():
        sink.add(CaseResult(case_id=case_id, verdict="skipped", reasons=[reason], source=selection.sources.get(
            case_id, "")))


def _stored_references(plan: RunPlan, store: ReferenceStore, spool: Spool) -> Stored:
    """The fresh stored references by case id, and the status of each stale case.

    `stored` mode makes a stale or missing reference an error naming what changed; `auto`
    runs the live reference instead, with a case warning naming what changed when the
    stored one is stale (a missing one changed nothing: one run warning). `live` uses none. Their outputs go
    to the spool as they are read: a nightly's references are not all held in memory."""
    cfg, paths, cases = plan.cfg, plan.paths, plan.cases
    found = Stored()
    if cfg.reference == "live":
        return found
    for case in cases:
        status = store.status(case, cfg.top_k, plan.reference.dtype, paths.decoders,
                              {} if paths.no_floor else paths.floors, paths.same)
        if status.state == "fresh" and status.reference:
            ref = status.reference  # a renamed case's reference was recorded under its old id
            ref.outputs = {name: spool.put(replace(o, case_id=case.id)) for name, o in ref.outputs.items()}
            where = f"stored: {status.path.name if status.path else ref.case_id}"
            ref.floors = {d: replace(f, source=where) for d, f in ref.floors.items()}
            found.references[case.id] = ref
        elif cfg.reference == "stored":
            result = case_result(case, "", "error", [note("stored_reference_unusable", **_status(status))])
            result.reference_stale = status.changes or ["no stored reference"]
            found.errors.append(result)
        elif status.state == "stale":
            found.notes[case.id] = status
    if found.references and not store.local:
        found.warnings.append(note("reference_model_not_local", model=store.model))
    missing = [c.id for c in cases if c.id not in found.references and c.id not in found.notes]
    if cfg.reference == "auto" and missing and store.dir.is_dir():
        found.warnings.append(note("references_missing", count=len(missing), dir=str(store.dir), cases=missing[:5]))
    return found


def _render(cases: list[Case], stored: Stored, model: str, sink: ResultsSink,
            console: Console) -> tuple[dict[str, str], Prompter | None]:
    """The prompt of every case: recorded with its stored reference, else rendered with the reference's
    processor (loaded only when some case needs it); a case that cannot be rendered is an error."""
    prompts = {case_id: ref.prompt_text for case_id, ref in stored.references.items()}
    live = [c for c in cases if c.id not in prompts]
    prompter = Prompter(model) if live else None
    for case in live:
        try:
            prompts[case.id] = prompter.render(case)  # type: ignore[union-attr]
        except Exception as exc:
            result = case_result(case, "", "error", [note("render_failed", type=type(exc).__name__, message=str(exc))])
            sink.add(result)
            console.case(result)
    return prompts, prompter


def _with_origin(result: CaseResult, stored: Stored) -> CaseResult:
    """Say where the case's reference came from, and why a stored one was not used."""
    ref = stored.references.get(result.case_id)
    result.reference_source = f"stored: {ref.case_id}.{ref.key[:16]}.json" if ref else "live"
    status = stored.notes.get(result.case_id)
    if status is not None:
        result.notes.insert(0, note("stale_reference", **_status(status)))
        result.reference_stale = status.changes
    return result


def _status(status: Status) -> dict[str, Any]:
    """A stored reference's status as a note's data: its state, its file, what changed."""
    return {"state": status.state, "file": status.path.name if status.path else None, "changes": status.changes}


def _stored_info(stored: dict[str, StoredReference]) -> dict[str, Any]:
    """With no live reference, what the stored ones say of how they were computed (one recording's)."""
    first = next(iter(stored.values()), None)
    return {"stored": True, **first.provenance} if first else {}


def _no_texts(outputs: list[Any]) -> dict[str, str]:
    """No processor and no stored one: the report shows token ids only."""
    return {}


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
