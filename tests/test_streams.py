"""Engines started early and held until their turn (the `Gate`), and several streams merged:
the harness's own orchestration, so a fake engine in real worker processes."""
from __future__ import annotations

import time
from pathlib import Path

from harness.engines.base import EngineSettings, Request
from harness.engines.client import EngineSide, Gate, stream
from harness.run.streams import Streams

FAKE = "tests.fake_engine:FakeEngine"
REQUESTS = [Request(f"case-{i}", f"prompt {i}", "batched") for i in range(3)]


def started(side: EngineSide) -> None:
    """Wait until the held engine has started (sent its info), then a little longer."""
    deadline = time.monotonic() + 120
    while not side.info and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1.0)


def test_a_held_engine_computes_only_once_its_gate_opens(tmp_path: Path) -> None:
    gate, side, ran = Gate(), EngineSide(), tmp_path / "ran"
    streams = Streams()
    settings = EngineSettings("m", options={"ran_file": str(ran)})
    streams.launch("held", stream(FAKE, settings, REQUESTS, side, lambda _: None, "held", go=gate))
    started(side)
    assert side.info and not ran.exists(), "the engine computed before its gate opened"
    gate.open()
    got = [output.case_id for name, output in streams if output is not None]
    assert got == ["case-0", "case-1", "case-2"] and side.fatal is None and ran.exists()


def test_a_held_engine_started_before_its_requests_are_known_gets_them_with_the_gate(tmp_path: Path) -> None:
    """The reference's scoring starts with the engines, before the answers it scores exist: its requests go down
    the pipe with the go line; after it broke mid-run (the request in flight an error), a restart runs the ones
    not yet submitted."""
    gate, side, ran = Gate(), EngineSide(), tmp_path / "ran"
    streams = Streams()
    settings = EngineSettings("m", options={"ran_file": str(ran), "die_after": 2})
    streams.launch("held", stream(FAKE, settings, None, side, lambda _: None, "held", go=gate))
    started(side)
    assert side.info and not ran.exists()
    gate.open([Request(f"case-{i}", f"prompt {i}", "batched", submit="alone") for i in range(4)])
    got = [(output.case_id, output.error is None) for name, output in streams if output is not None]
    assert got == [("case-0", True), ("case-1", True), ("case-2", False), ("case-3", True)], got
    assert side.restarts == 1 and ran.exists()


def test_a_cancelled_gate_closes_the_engine_without_computing_or_restarting(tmp_path: Path) -> None:
    gate, side, ran = Gate(), EngineSide(), tmp_path / "ran"
    streams = Streams()
    settings = EngineSettings("m", options={"ran_file": str(ran)})
    streams.launch("held", stream(FAKE, settings, REQUESTS, side, lambda _: None, "held", go=gate))
    started(side)
    gate.cancel()
    outputs = [output for _, output in streams if output is not None]
    assert side.info and side.restarts == 0 and not ran.exists()
    assert {o.case_id for o in outputs} <= {r.case_id for r in REQUESTS} and all(o.error for o in outputs)
    assert side.fatal is not None and "the run ended before this engine could compute" in side.fatal


def test_a_stream_that_raises_is_raised_in_the_calling_thread() -> None:
    def broken():
        yield from ()
        raise RuntimeError("harness bug")

    streams = Streams()
    streams.launch("broken", broken())
    try:
        list(streams)
    except RuntimeError as exc:
        assert str(exc) == "harness bug"
    else:
        raise AssertionError("the error was swallowed")
