"""`vlm-parity record` and `vlm-parity references check`: write stored references, list stale ones.

Recording runs the live reference (in its own worker process, as a run does) and
writes each case's file as soon as all of its outputs are in, so a killed record
keeps every case it finished and leaves no half-written file (writes are atomic).
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from harness import __version__
from harness.cases import Case, load_cases
from harness.decode import same_pixels
from harness.engines.base import EngineSettings, resolve_engine
from harness.engines.client import EngineSide, stream
from harness.models import DEFAULT_MODEL, image_token_id, resolve_model
from harness.plan import load_variants
from harness.prompt import Prompter
from harness.references import (
    DEFAULT_DIR,
    ProcessorInfo,
    ReferenceStore,
    Status,
    StoredReference,
    content_key,
    provenance,
)
from harness.judge import sane
from harness.runner import reference_decoders, reference_requests
from harness.schema import EngineOutput

Progress = Callable[[str], None]


@dataclass
class RecordConfig:
    """What to record: the reference model's outputs on these cases, in this dtype, on this device."""

    cases: list[Path]
    model: str | None = None  # None: the default model
    dtype: str = "float32"
    device: str = "cpu"
    top_k: int = 5
    references_dir: Path | None = None
    variants_files: list[Path] = field(default_factory=list)
    update: bool = False  # re-record references that exist (fresh or stale by provenance)
    stall_s: float = 600.0
    reference_engine: str = "hf"  # the reference adapter (any engine name or module:Class)


@dataclass
class Selection:
    """The cases of a store check, each with its status."""

    store: ReferenceStore
    statuses: dict[str, Status]
    cases: list[Case]
    problems: list[str]
    decoders: list[str]


def select(cases: list[Path], model: str | None, dtype: str, top_k: int, references_dir: Path | None,
           variants_files: list[Path], engine: str = "hf") -> Selection:
    """Every case's stored-reference status, for the decoders any variant compares with."""
    store = ReferenceStore(references_dir or DEFAULT_DIR, model or DEFAULT_MODEL, resolve_model(model), engine)
    loaded = load_cases(cases)
    decoders = reference_decoders(load_variants(variants_files).select(["all"]))
    statuses = {c.id: store.status(c, top_k, dtype, decoders) for c in loaded.cases}
    return Selection(store, statuses, loaded.cases, [str(p) for p in loaded.problems], decoders)


def check(cases: list[Path], model: str | None, dtype: str, top_k: int, references_dir: Path | None,
          variants_files: list[Path], progress: Progress = print, engine: str = "hf") -> int:
    """Print each case's status and the unused files; 1 if any case is missing or stale, 2 on invalid cases."""
    sel = select(cases, model, dtype, top_k, references_dir, variants_files, engine)
    for case in sel.cases:
        progress(f"{sel.statuses[case.id].state.upper():7} {case.id}: {sel.statuses[case.id].describe()}")
    keys = {s.reference.key for s in sel.statuses.values() if s.reference}
    for path in sel.store.unused(keys):
        progress(f"UNUSED  {path.name}: no current case has this content (a renamed or edited case's old reference)")
    for problem in sel.problems:
        progress(f"INVALID {problem}")
    counts = Counter(s.state for s in sel.statuses.values())
    progress(f"{sel.store.dir}: {counts['fresh']} fresh, {counts['stale']} stale, {counts['missing']} missing")
    if sel.problems:
        return 2
    return 1 if counts["stale"] or counts["missing"] else 0


def record(cfg: RecordConfig, progress: Progress = print) -> int:
    """Record the missing references (and, with `update`, re-record existing ones): 0 when every case
    has a fresh reference afterwards, 1 when some could not be recorded or were kept stale, 2 on invalid cases."""
    model = resolve_model(cfg.model)
    if not Path(model).is_dir():
        progress(f"record needs the checkpoint on this machine (a folder): {model} is not one")
        return 2
    sel = select(cfg.cases, cfg.model, cfg.dtype, cfg.top_k, cfg.references_dir, cfg.variants_files,
                 cfg.reference_engine)
    store = sel.store
    todo = []
    for case in sel.cases:
        status = sel.statuses[case.id]
        if status.state == "missing" or cfg.update or (status.state == "stale" and status.reference is None):
            todo.append(case)
        else:
            advice = "" if status.state == "fresh" else " (use --update to re-record)"
            progress(f"KEPT    {case.id}: {status.describe()}{advice}")
    for problem in sel.problems:
        progress(f"INVALID {problem}")
    failed = sum(s.state == "stale" for c, s in sel.statuses.items() if c not in {t.id for t in todo})
    prompter = Prompter(model)
    if store.processor is None:  # without it no stored run can use the references
        store.save_processor(_processor_info(store, prompter, model))
    if not todo:
        return 2 if sel.problems else 1 if failed else 0

    prompts = {c.id: prompter.render(c) for c in todo}
    engine = resolve_engine(cfg.reference_engine)
    requests = reference_requests(todo, prompts, sel.decoders, engine.capabilities)
    expected = Counter(r.case_id for r in requests)
    outputs: dict[str, dict[str, EngineOutput]] = {c.id: {} for c in todo}
    by_id = {c.id: c for c in todo}
    side = EngineSide()
    settings = EngineSettings(model, cfg.dtype, cfg.device, cfg.top_k)
    written = 0
    for output in stream(cfg.reference_engine, settings, requests, side, progress, "record", cfg.stall_s):
        outputs[output.case_id][output.variant] = output
        if len(outputs[output.case_id]) < expected[output.case_id]:
            continue
        case = by_id[output.case_id]
        errors = [o.error for o in outputs[case.id].values() if o.error]
        errors += [f"{o.variant}: {p}" for o in outputs[case.id].values() if not o.error for p in sane(o)]
        if errors:
            progress(f"ERROR   {case.id}: {'; '.join(errors)}")
            failed += 1
            continue
        path = _save(store, case, prompts[case.id], outputs[case.id], sel.decoders, side, cfg)
        written += 1
        progress(f"WROTE   {case.id}: {path}")
        if cfg.update:
            for old in store.of_case(case.id):
                if old != path:
                    old.unlink()
                    progress(f"REMOVED {old.name}: {case.id}'s superseded reference")
    failed += sum(len(o) < expected[c] for c, o in outputs.items())
    if side.fatal:
        progress(f"reference failed: {side.fatal}")
    progress(f"{store.dir}: {written} written, {failed} not recorded")
    return 2 if sel.problems else 1 if failed or side.fatal else 0


def _save(store: ReferenceStore, case: Case, prompt_text: str, outputs: dict[str, EngineOutput],
          decoders: list[str], side: EngineSide, cfg: RecordConfig) -> Path:
    fields = store.fields(case, cfg.top_k, cfg.dtype)
    # Timings vary run to run: keeping them out keeps a re-recorded file's diff to what changed.
    clean = {name: _without_timings(o) for name, o in outputs.items()}
    pixels = {d: same_pixels(case.images, d) for d in decoders} if case.images else {}
    return store.save(StoredReference(
        key=content_key(fields), fields=fields, case_id=case.id, prompt_text=prompt_text, outputs=clean,
        same_pixels=pixels,
        provenance=provenance(cfg.model or DEFAULT_MODEL, store, side.info, cfg.dtype, cfg.device, case, __version__),
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
