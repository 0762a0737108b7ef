"""`vlm-parity record` and `vlm-parity references check`: write stored references, list stale ones.

Recording runs the live reference (in its own worker process, as a run does) and
writes each case's file as soon as all of its outputs are in, so a killed record
keeps every case it finished and leaves no half-written file (writes are atomic).
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import __version__, config
from harness.core.notes import stream_end
from harness.core.schema import EngineOutput
from harness.engines.client import EngineSide, stream
from harness.inputs.cases import Case, load_cases
from harness.inputs.decode import same_pixels
from harness.inputs.models import image_token_id, processor_options, video_options, video_token_id
from harness.inputs.prompt import Prompter
from harness.judging.compare.floor import case_floors
from harness.judging.judge import sane
from harness.run.ledger import REFERENCE, CaseLedger
from harness.run.observe import Observer
from harness.run.options import DEFAULT_CASES, DTYPES, comma_list, option, same_as
from harness.run.plan import (
    FLOOR_PREFIX,
    OPTIONS,
    Side,
    media_skip_reason,
    model_side,
    plan_floors,
    reference_decoders,
    reference_requests,
    reference_same,
    reference_skip_reason,
)
from harness.run.references import (
    DEFAULT_DIR,
    ProcessorInfo,
    ReferenceStore,
    Status,
    StoredReference,
    content_key,
    provenance,
    same_values,
)
from harness.run.variants import load_variants

Progress = Callable[[str], None]


@dataclass
class RecordConfig:
    """What to record: the reference model's outputs on these cases, in this dtype, on this device, with the
    floors of every engine dtype in `floor_dtypes`. Its options share the run's declarations."""

    cases: list[Path] = same_as("cases")
    model: str | None = same_as("model", help="reference checkpoint or built-in model name (default: the default "
                                              "model)")
    dtype: str = same_as("dtype", help="the reference's dtype (default: float32)")
    device: str = same_as("device", help="device the reference runs on (default: cpu)")
    top_k: int = same_as("top_k", help="top-k candidates stored per position (default: 5)")
    references_dir: Path | None = same_as("references_dir")
    only: set[str] | None = same_as("only", help="record only this case (repeatable)")
    variants_files: list[Path] = same_as("variants_files", help="extra variants whose reference decoders must be "
                                                                "recorded too")
    update: bool = option(False, "re-record references that exist, and remove a case's superseded ones",
                          action="store_true")
    stall_s: float = same_as("stall_s", help="stop a reference that returns nothing for this long (default: 600)")
    reference_engine: str = same_as("reference_engine")
    floor_dtypes: list[str] = option(help=f"engine dtypes to measure each case's floor for (default: "
                                          f"{','.join(DTYPES)})", type=comma_list, metavar="DTYPE,...",
                                     factory=lambda: list(DTYPES))


@dataclass
class Selection:
    """The cases of a store check, each with its status."""

    store: ReferenceStore
    statuses: dict[str, Status]
    cases: list[Case]
    problems: list[str]
    decoders: list[str]
    same: dict[str, dict[str, Any]]  # variant -> the request fields of its re-run (`reference_same`)
    floors: dict[str, dict[str, dict[str, Any]]]  # engine dtype -> its floor runs
    skipped: dict[str, str]  # case -> why the model cannot run it (no reference to record)
    side: Side  # the reference, resolved


def select(cfg: RecordConfig) -> Selection:
    """Every case's stored-reference status, for the decoders any variant compares with and the floors of
    `floor_dtypes` (none where the reference engine cannot recompute with their overrides)."""
    side = model_side(cfg.reference_engine, cfg.model, cfg.dtype, cfg.device)
    store = ReferenceStore(cfg.references_dir or DEFAULT_DIR, side.model_name, side.model, side.engine)
    loaded = load_cases(cfg.cases or [DEFAULT_CASES])
    variants = load_variants(cfg.variants_files).select(["all"])
    decoders = reference_decoders(variants, processor_options(side.model))
    same = reference_same([v for v in variants if not reference_skip_reason(v, side)])
    floors, no_floor = plan_floors(cfg.floor_dtypes, side.dtype, config.resolve_section(config.load_config(), "floor")
                                   .values, side.capabilities, side.engine)
    floors = {} if no_floor else floors
    takes_video = video_token_id(side.model) is not None
    wanted = [c for c in loaded.cases if cfg.only is None or c.id in cfg.only]
    problems = [str(p) for p in loaded.problems]
    unknown = sorted((cfg.only or set()) - {c.id for c in loaded.cases})
    problems += [f"--case {case_id}: no such case" for case_id in unknown]
    skipped = {c.id: reason for c in wanted if (reason := media_skip_reason(c, takes_video))}
    cases = [c for c in wanted if c.id not in skipped]
    statuses = {c.id: store.status(c, cfg.top_k, side.dtype, decoders, floors, same) for c in cases}
    return Selection(store, statuses, cases, problems, decoders, same, floors, skipped, side)


def check(cfg: RecordConfig, progress: Progress = print) -> int:
    """Print each case's status and the unused files; 1 if any case is missing or stale, 2 on invalid cases."""
    sel = select(cfg)
    for case in sel.cases:
        progress(f"{sel.statuses[case.id].state.upper():7} {case.id}: {sel.statuses[case.id].describe()}")
    keys = {s.reference.key for s in sel.statuses.values() if s.reference}
    for path in sel.store.unused(keys):
        progress(f"UNUSED  {path.name}: no current case has this content (a renamed or edited case's old reference)")
    for case_id, reason in sel.skipped.items():
        progress(f"SKIP    {case_id}: {reason}")
    for problem in sel.problems:
        progress(f"INVALID {problem}")
    counts = Counter(s.state for s in sel.statuses.values())
    progress(f"{sel.store.dir}: {counts['fresh']} fresh, {counts['stale']} stale, {counts['missing']} missing")
    if sel.problems:
        return 2
    return 1 if counts["stale"] or counts["missing"] else 0


def record(cfg: RecordConfig, progress: Progress = print, observer: Observer | None = None) -> int:
    """Record the missing references (and, with `update`, re-record existing ones): 0 when every case
    has a fresh reference afterwards, 1 when some could not be recorded or were kept stale, 2 on invalid cases."""
    sel = select(cfg)
    model = sel.side.model
    if not Path(model).is_dir():
        progress(f"record needs the checkpoint on this machine (a folder): {model} is not one")
        return 2
    todo = [c for c in sel.cases if _due(sel.statuses[c.id], cfg.update)]
    for case in sel.cases:
        if case not in todo:
            advice = "" if sel.statuses[case.id].state == "fresh" else " (use --update to re-record)"
            progress(f"KEPT    {case.id}: {sel.statuses[case.id].describe()}{advice}")
    for case_id, reason in sel.skipped.items():
        progress(f"SKIP    {case_id}: {reason}")
    for problem in sel.problems:
        progress(f"INVALID {problem}")
    failed = sum(sel.statuses[c.id].state == "stale" for c in sel.cases if c not in todo)
    prompter = Prompter(model)
    if sel.store.processor is None:  # without it no stored run can use the references
        sel.store.save_processor(_processor_info(sel.store, prompter, model))
    written, unrecorded, fatal = _record(cfg, sel, todo, prompter, model, progress, observer or Observer())
    if fatal:
        progress(f"reference failed: {fatal}")
    if todo:
        progress(f"{sel.store.dir}: {written} written, {failed + unrecorded} not recorded")
    return 2 if sel.problems else 1 if failed or unrecorded or fatal else 0


def _due(status: Status, update: bool) -> bool:
    return status.state == "missing" or update or (status.state == "stale" and status.reference is None)


def _record(cfg: RecordConfig, sel: Selection, todo: list[Case], prompter: Prompter, model: str, progress: Progress,
            observer: Observer) -> tuple[int, int, str | None]:
    """Run the reference on the cases to record, writing each case as soon as the ledger closes it:
    (written, not recorded, why the reference failed)."""
    if not todo:
        return 0, 0, None
    prompts = {c.id: prompter.render(c) for c in todo}
    runs = {name: overrides for per_dtype in sel.floors.values() for name, overrides in per_dtype.items()}
    requests = reference_requests(todo, prompts, sel.decoders, sel.side.capabilities, runs, processor_options(model),
                                  video_options(model), sel.same)
    ledger = CaseLedger({c.id: {(r.variant, 0): REFERENCE for r in requests if r.case_id == c.id} for c in todo})
    by_id, side, written, unrecorded = {c.id: c for c in todo}, EngineSide(), 0, 0
    settings = sel.side.settings(cfg.top_k)
    outputs = stream(sel.side.engine, settings, requests, side, progress, "record", cfg.stall_s)
    for output in observer.stream("record", sel.side.engine, settings, requests, outputs, side):
        for case_id in ledger.accept(REFERENCE, output):
            ok = _write(cfg, sel, by_id[case_id], prompts[case_id], ledger.entry(case_id), side, progress)
            written, unrecorded = written + ok, unrecorded + (not ok)
    unrecorded += len(ledger.stream_ended(REFERENCE, stream_end(True, side.fatal)))
    return written, unrecorded, side.fatal


def _write(cfg: RecordConfig, sel: Selection, case: Case, prompt: str, entry: Any, side: EngineSide,
           progress: Progress) -> bool:
    """One case's file, if every output of it but the floor runs' is sane; the superseded ones removed with
    --update. A floor run that fails is left out of the floor, with its error, as a live run does."""
    outputs = {REFERENCE: entry.reference, **entry.extra} if entry.reference else dict(entry.extra)
    kept = {name: o for name, o in outputs.items() if not name.startswith(FLOOR_PREFIX)}
    errors = [f"{name}: {o.error}" for name, o in kept.items() if o.error]
    errors += [f"{name}: {p.detail}" for name, o in kept.items() if not o.error for p in sane(o)]
    if errors or entry.reference is None:
        progress(f"ERROR   {case.id}: {'; '.join(errors) or 'no reference output'}")
        return False
    path = _save(sel.store, case, prompt, outputs, sel, side, cfg)
    progress(f"WROTE   {case.id}: {path}")
    for old in sel.store.of_case(case.id) if cfg.update else ():
        if old != path:
            old.unlink()
            progress(f"REMOVED {old.name}: {case.id}'s superseded reference")
    return True


def _save(store: ReferenceStore, case: Case, prompt_text: str, outputs: dict[str, EngineOutput],
          sel: Selection, side: EngineSide, cfg: RecordConfig) -> Path:
    """The case's reference outputs and, instead of the floor runs' outputs, the floors they measure."""
    fields = store.fields(case, cfg.top_k, cfg.dtype)
    image_token = image_token_id(store.model)
    floors = case_floors(outputs["reference"], outputs, sel.floors, image_token)
    # Timings vary run to run: keeping them out keeps a re-recorded file's diff to what changed.
    clean = {name: _without_timings(o) for name, o in outputs.items() if not name.startswith(FLOOR_PREFIX)}
    pixels = {d: same_pixels(case.images, d) for d in sel.decoders if d != OPTIONS} if case.images else {}
    return store.save(StoredReference(
        key=content_key(fields), fields=fields, case_id=case.id, prompt_text=prompt_text, outputs=clean,
        same_pixels=pixels, same={name: same_values(values) for name, values in sel.same.items()}, floors=floors,
        provenance=provenance(sel.side.model_name, store, side.info, sel.side.dtype, sel.side.device, case,
                              __version__),
    ))


def _without_timings(output: EngineOutput) -> EngineOutput:
    output.timings = {}
    return output


def _processor_info(store: ReferenceStore, prompter: Prompter, model: str) -> ProcessorInfo:
    """The chat template, image token and every token's text: what a stored run shows without a processor."""
    tokenizer = prompter.processor.tokenizer
    return ProcessorInfo(
        processor_sha256=store.processor_sha256 or "", chat_template=prompter.chat_template,
        image_token=image_token_id(model),
        token_texts={str(i): prompter.processor.decode([i]) for i in range(len(tokenizer))},
    )
