"""The case ledger: what each case still waits for, what arrived, and why it closed.

A pure state machine over the outputs of the run's streams (the reference and each engine group),
tested in-process with synthetic outputs. Every case closes exactly once: when its last expected
output arrives, when the streams that owed it outputs end without them (the reason, a note, is kept
per variant), or when its reference fails (no comparison can be made, so nothing else is waited for).
An output nobody asked for, or one for a case already closed, is noted and ignored.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from harness.core.schema import EngineOutput, Note

REFERENCE = "reference"  # the reference's stream; engine groups are named by their index
SCORING = "scoring"  # the reference again, after the engines: scoring their sampled answers' tokens
REFERENCE_SIDE = (REFERENCE, SCORING)  # streams whose outputs are the reference's (`CaseEntry.extra`)
Key = tuple[str, int]  # (request variant, attempt): one output a case waits for


@dataclass
class CaseEntry:
    """One case's account: `waiting` maps each output still owed to the stream that owes it."""

    case_id: str
    waiting: dict[Key, str] = field(default_factory=dict)
    reference: EngineOutput | None = None
    extra: dict[str, EngineOutput] = field(default_factory=dict)  # the reference's other request variants
    outputs: dict[str, list[EngineOutput]] = field(default_factory=dict)  # engine outputs by variant, in order
    missing: dict[str, Note] = field(default_factory=dict)  # variant (or REFERENCE) -> why it will not come
    closed: str | None = None  # "complete", "incomplete" (`missing` says why) or "reference failed"


class CaseLedger:
    """Feed it outputs and stream ends; each call returns the ids of the cases it closed."""

    def __init__(self, expected: Mapping[str, Mapping[Key, str]],
                 stored: Mapping[str, Mapping[str, EngineOutput]] | None = None) -> None:
        """`expected[case][key]` names the stream that owes the output; `stored[case]` holds the outputs a
        stored reference already has (its `reference` and other request variants)."""
        self.entries = {case_id: CaseEntry(case_id, dict(keys)) for case_id, keys in expected.items()}
        for case_id, outputs in (stored or {}).items():
            entry = self.entries[case_id]
            entry.reference = outputs.get(REFERENCE)
            entry.extra = {name: o for name, o in outputs.items() if name != REFERENCE}
        self.ignored: list[str] = []  # outputs nobody asked for, in words

    def opening(self) -> list[str]:
        """Cases that wait for nothing (a stored reference and every variant skipped): closed at once."""
        return self._close_if_done(self.entries)

    def accept(self, source: str, output: EngineOutput) -> list[str]:
        entry = self.entries.get(output.case_id)
        key = (output.variant, output.attempt)
        if entry is None or entry.waiting.get(key) != source:
            if entry is None or entry.closed is None:
                self.ignored.append(f"{source}: {output.case_id} {output.variant} attempt {output.attempt + 1}")
            return []
        del entry.waiting[key]
        if source not in REFERENCE_SIDE:
            entry.outputs.setdefault(output.variant, []).append(output)
        elif output.variant == REFERENCE:
            entry.reference = output
            if output.error:
                return self._close(entry, "reference failed")
        else:
            entry.extra[output.variant] = output
        return self._close_if_done([entry.case_id])

    def stream_ended(self, source: str, reason: Note) -> list[str]:
        """`source` will send nothing more: what it still owed will never come, for `reason`. A case whose
        reference never came closes at once: nothing can be compared with it."""
        closed, touched = [], []
        for entry in self.entries.values():
            owed = [key for key, owner in entry.waiting.items() if owner == source]
            for key in owed:
                del entry.waiting[key]
                if source != REFERENCE:
                    entry.missing.setdefault(key[0], reason)
            if (REFERENCE, 0) in owed and source == REFERENCE:
                entry.missing[REFERENCE] = reason
                closed += self._close(entry, "reference failed")
            elif owed:
                touched.append(entry.case_id)
        return closed + self._close_if_done(touched)

    def withdraw(self, case_ids: Iterable[str], source: str, reason: Note,
                 keys: Iterable[Key] | None = None) -> list[str]:
        """The case's requests to `source` (those of `keys` only, when given) are not sent after all (its
        reference failed first; an answer to score never came)."""
        closed = []
        only = None if keys is None else set(keys)
        for case_id in case_ids:
            entry = self.entries[case_id]
            for key in [k for k, owner in entry.waiting.items() if owner == source and (only is None or k in only)]:
                del entry.waiting[key]
                entry.missing.setdefault(key[0], reason)
            closed += self._close_if_done([case_id])
        return closed

    def entry(self, case_id: str) -> CaseEntry:
        return self.entries[case_id]

    def release(self, case_id: str) -> None:
        """A closed case's outputs are judged and written: the ledger lets go of them (a run's memory does not
        grow with its cases), keeping why it closed."""
        entry = self.entries[case_id]
        assert entry.closed is not None, case_id
        entry.reference, entry.extra, entry.outputs = None, {}, {}

    def completed(self) -> bool:
        return all(e.closed is not None for e in self.entries.values())

    def open_cases(self) -> list[str]:
        return [case_id for case_id, e in self.entries.items() if e.closed is None]

    def _close_if_done(self, case_ids: Iterable[str]) -> list[str]:
        closed = []
        for case_id in case_ids:
            entry = self.entries[case_id]
            if entry.closed is None and not entry.waiting:
                closed += self._close(entry, "complete" if not entry.missing else "incomplete")
        return closed

    @staticmethod
    def _close(entry: CaseEntry, why: str) -> list[str]:
        if entry.closed is not None:
            return []
        entry.closed = why
        entry.waiting.clear()
        return [entry.case_id]
