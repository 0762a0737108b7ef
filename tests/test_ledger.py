"""The case ledger and the scheduler: the run's orchestration as pure objects, in milliseconds.

Synthetic outputs stand for what the engine streams send; each test is one story the runner used
to need worker processes for (a reference that fails, an engine that dies mid-case, repeats, a
restart, an unexpected output, every variant skipped, overlap on and off).
"""
from __future__ import annotations

from harness.core.notes import note, stream_end
from harness.core.schema import EngineOutput
from harness.run.ledger import REFERENCE, SCORING, CaseLedger
from harness.run.scheduler import Launch, Open, Scheduler


def out(case: str, variant: str, attempt: int = 0, error: str | None = None) -> EngineOutput:
    return EngineOutput(case, "x", variant, attempt, error=error)


def ledger(*cases: str, repeats: int = 1) -> CaseLedger:
    """Each case waits for its reference, a flat-grey run, `batched` from group 0 and `repeat` x repeats from 1."""
    return CaseLedger({c: {(REFERENCE, 0): REFERENCE, ("flat-grey", 0): REFERENCE, ("batched", 0): "0",
                           **{("repeat", a): "1" for a in range(repeats)}} for c in cases})


def test_a_case_closes_once_when_its_last_output_arrives() -> None:
    book = ledger("a", "b")
    assert book.accept(REFERENCE, out("a", REFERENCE)) == []
    assert book.accept(REFERENCE, out("a", "flat-grey")) == []
    assert book.accept("0", out("a", "batched")) == []
    assert book.accept("1", out("a", "repeat")) == ["a"]
    entry = book.entry("a")
    assert entry.closed == "complete" and entry.reference.variant == REFERENCE and set(entry.extra) == {"flat-grey"}
    assert entry.outputs == {"batched": [out("a", "batched")], "repeat": [out("a", "repeat")]}
    assert book.accept("1", out("a", "repeat")) == [] and not book.ignored  # late duplicate of a closed case
    assert book.open_cases() == ["b"] and not book.completed()


def test_repeats_wait_for_every_attempt_in_order() -> None:
    book = ledger("a", repeats=3)
    for event in [(REFERENCE, out("a", REFERENCE)), (REFERENCE, out("a", "flat-grey")), ("0", out("a", "batched")),
                  ("1", out("a", "repeat", 0)), ("1", out("a", "repeat", 1))]:
        assert book.accept(*event) == []
    assert book.accept("1", out("a", "repeat", 2)) == ["a"]
    assert [o.attempt for o in book.entry("a").outputs["repeat"]] == [0, 1, 2]


def test_a_failed_reference_closes_the_case_at_once() -> None:
    """Nothing can be compared with it: the engine outputs still owed are not waited for."""
    book = ledger("a")
    assert book.accept(REFERENCE, out("a", REFERENCE, error="OOM")) == ["a"]
    assert book.entry("a").closed == "reference failed"
    assert book.accept("0", out("a", "batched")) == [] and not book.ignored


def test_a_reference_stream_that_ends_early_closes_what_it_never_answered() -> None:
    book = ledger("a", "b")
    for event in [(REFERENCE, out("a", REFERENCE)), (REFERENCE, out("a", "flat-grey"))]:
        book.accept(*event)
    died = stream_end(True, "died")
    assert book.stream_ended(REFERENCE, died) == ["b"]
    assert book.entry("b").closed == "reference failed" and book.entry("b").reference is None
    assert book.entry("b").missing == {REFERENCE: died}  # why, as a record: the runner's error note
    assert book.open_cases() == ["a"]  # its reference came: it still waits for the engines


def test_an_engine_that_dies_mid_case_leaves_the_reason_on_its_variants() -> None:
    book = ledger("a", "b")
    for case in ("a", "b"):
        book.accept(REFERENCE, out(case, REFERENCE))
        book.accept(REFERENCE, out(case, "flat-grey"))
        book.accept("1", out(case, "repeat"))
    assert book.accept("0", out("a", "batched", error="died while this case was in flight")) == ["a"]
    killed = stream_end(False, "killed")
    assert book.stream_ended("0", killed) == ["b"]
    assert book.entry("a").outputs["batched"][0].error and not book.entry("a").missing
    assert book.entry("b").missing == {"batched": killed} and book.entry("b").closed == "incomplete"
    assert book.completed()


def test_a_restarted_engine_settles_in_flight_cases_as_errors_and_answers_the_rest() -> None:
    """What a restart looks like from the ledger: an error for the case in flight, then the fresh engine's
    outputs for the others, on the same stream."""
    book = ledger("a", "b")
    for case in ("a", "b"):
        book.accept(REFERENCE, out(case, REFERENCE))
        book.accept(REFERENCE, out(case, "flat-grey"))
        book.accept("1", out(case, "repeat"))
    assert book.accept("0", out("a", "batched", error="engine process died (SIGKILL) while in flight")) == ["a"]
    assert book.accept("0", out("b", "batched")) == ["b"]
    assert book.stream_ended("0", stream_end(False, None)) == [] and book.completed()


def test_unexpected_outputs_are_noted_and_ignored() -> None:
    book = ledger("a")
    assert book.accept("0", out("zzz", "batched")) == []
    assert book.accept("0", out("a", "no-such-variant")) == []
    assert book.accept("1", out("a", "batched")) == []  # right key, wrong stream
    assert len(book.ignored) == 3 and book.open_cases() == ["a"]


def test_a_case_with_everything_stored_and_skipped_closes_at_the_opening() -> None:
    stored = {"a": {REFERENCE: out("a", REFERENCE), "flat-grey": out("a", "flat-grey")}}
    book = CaseLedger({"a": {}, "b": {(REFERENCE, 0): REFERENCE}}, stored)
    assert book.opening() == ["a"] and book.entry("a").reference == out("a", REFERENCE)
    assert set(book.entry("a").extra) == {"flat-grey"}


def test_withdrawn_requests_are_missing_with_the_reason() -> None:
    book = CaseLedger({"a": {(REFERENCE, 0): REFERENCE, ("chunked", 0): "1"}})
    book.accept(REFERENCE, out("a", REFERENCE))
    assert book.withdraw(["a"], "1", note("not_sent")) == ["a"]
    assert book.entry("a").missing == {"chunked": note("not_sent")}


def test_scheduler_with_overlap_starts_engines_early_and_computes_one_at_a_time() -> None:
    """Groups 0 and 2 start held while the reference runs; group 1 needs the reference's outputs."""
    s = Scheduler([False, True, False], overlap=True, reference_running=True)
    assert s.start() == [Launch(0, held=True), Launch(2, held=True)]
    assert s.reference_finished() == [Launch(1, held=True), Open(0)]
    assert s.group_finished(0) == [Open(1)]
    assert s.group_finished(1) == [Open(2)]
    assert s.group_finished(2) == []


def test_scheduler_without_overlap_runs_one_process_at_a_time() -> None:
    s = Scheduler([False, True], overlap=False, reference_running=True)
    assert s.start() == []
    assert s.reference_finished() == [Launch(0, held=False), Open(0)]
    assert s.group_finished(0) == [Launch(1, held=False), Open(1)]
    assert s.group_finished(1) == []


def test_scheduler_with_every_reference_stored_starts_the_first_group_at_once() -> None:
    assert Scheduler([False, False], overlap=True, reference_running=False).start() == [
        Launch(0, held=True), Launch(1, held=True), Open(0)]
    assert Scheduler([], overlap=True, reference_running=False).start() == []
    assert Scheduler([False], overlap=False, reference_running=False).start() == [Launch(0, held=False), Open(0)]


def test_a_group_that_ends_early_lets_the_next_one_compute() -> None:
    s = Scheduler([False, False], overlap=True, reference_running=True)
    s.start()
    s.reference_finished()
    assert s.group_finished(0) == [Open(1)] and s.group_finished(0) == []  # a second end changes nothing


def test_the_scoring_starts_with_the_engines_and_computes_last() -> None:
    """The reference's scoring of sampled answers is the last job: with overlap it starts (held) with the engine
    groups, so its start-up hides behind their work, and computes after the last; without overlap, after it."""
    s = Scheduler([False, True], overlap=True, reference_running=True, scores=True)
    assert s.start() == [Launch(0, held=True), Launch(2, held=True)]
    assert s.reference_finished() == [Launch(1, held=True), Open(0)]
    assert s.group_finished(0) == [Open(1)]
    assert s.group_finished(1) == [Open(2)]
    assert s.group_finished(2) == []
    alone = Scheduler([False], overlap=False, reference_running=False, scores=True)
    assert alone.start() == [Launch(0, held=False), Open(0)]
    assert alone.group_finished(0) == [Launch(1, held=False), Open(1)]


def test_a_case_waits_for_its_scored_answers_and_keeps_them_as_the_references() -> None:
    """Scorings are the reference's outputs (`extra`), owed by the scoring stream; an answer that never came is
    withdrawn alone, the others still awaited."""
    book = CaseLedger({"a": {(REFERENCE, 0): REFERENCE, ("sampling", 0): "0", ("scored-sampling.0", 0): SCORING,
                             ("scored-sampling.1", 0): SCORING}})
    book.accept(REFERENCE, out("a", REFERENCE))
    assert book.accept("0", out("a", "sampling")) == []
    assert book.withdraw(["a"], SCORING, note("no_output"), [("scored-sampling.1", 0)]) == []
    assert book.entry("a").missing == {"scored-sampling.1": note("no_output")}
    assert book.accept(SCORING, out("a", "scored-sampling.0")) == ["a"]
    assert set(book.entry("a").extra) == {"scored-sampling.0"} and set(book.entry("a").outputs) == {"sampling"}
