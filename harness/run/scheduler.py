"""Which engine computes when: a pure object that turns the run's events into actions.

One job computes at a time: the reference, then each engine group in plan order (two torch
processes computing at once on one machine wait on each other's threads). With overlap (every side
on the CPU) the next engines are started early and held at their gate, so their start-up hides
behind the job before them; without it, one engine process exists at a time. A group whose settings
depend on the reference's outputs (`needs_reference`: a prefill chunk size chosen from the image
spans) is started only once the reference has finished. The reference's scoring of sampled answers comes
last, as job number len(groups): with overlap it starts with the others and is given its requests (the
answers, known by then) when it may compute.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Launch:
    """Start engine group `group`'s stream; `held`: it waits at its gate until `Open`."""

    group: int
    held: bool


@dataclass(frozen=True)
class Open:
    """Engine group `group` may compute now."""

    group: int


Action = Launch | Open


@dataclass
class Scheduler:
    """`needs_reference[i]` for each engine group, in the order they compute."""

    needs_reference: Sequence[bool]
    overlap: bool
    reference_running: bool  # False when every reference output is stored: nothing to wait for
    scores: bool = False  # a last job, the reference scoring the groups' sampled answers
    launched: set[int] = field(default_factory=set)
    opened: set[int] = field(default_factory=set)

    @property
    def scoring(self) -> int:
        """The scoring job's number (after every group)."""
        return len(self.needs_reference)

    @property
    def jobs(self) -> int:
        return len(self.needs_reference) + self.scores

    def start(self) -> list[Action]:
        """The first actions, once the reference stream (if any) has been launched."""
        if not self.reference_running:
            return self.reference_finished()
        return [self._launch(i, held=True) for i in range(self.jobs)
                if self.overlap and (i == self.scoring or not self.needs_reference[i])]

    def reference_finished(self) -> list[Action]:
        self.reference_running = False
        held = [self._launch(i, held=True) for i in range(self.jobs) if self.overlap and i not in self.launched]
        return held + self._ready(0)

    def group_finished(self, group: int) -> list[Action]:
        """A group (or the scoring job) has finished: the next job may compute."""
        return self._ready(group + 1)

    def _ready(self, group: int) -> list[Action]:
        """The job before `group` has finished: it may compute (and, without overlap, start)."""
        if group >= self.jobs or group in self.opened:
            return []
        self.opened.add(group)
        actions: list[Action] = [Open(group)]
        if group not in self.launched:
            actions.insert(0, self._launch(group, held=False))
        return actions

    def _launch(self, group: int, held: bool) -> Launch:
        self.launched.add(group)
        return Launch(group, held)
