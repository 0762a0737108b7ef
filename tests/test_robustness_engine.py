"""Engine faults, with the real vLLM engine: each affected case is an `error` (or a failure)
naming the cause, no case the engine already returned is lost, and the run ends with a report.

- The engine process killed by PID mid-run, then a case that hangs: vLLM itself is made to
  block on a chosen request (tests/faulty_vllm.py); the test kills the engine process by the
  PID it reports, the harness's stall guard stops the second hang. A fresh engine runs what
  was never sent, within --engine-restarts.
- NaN and inf logprobs, fewer logprobs than tokens: made in vLLM's output processor for
  chosen requests.
- A real vLLM server behind a fault-injecting proxy (tests/fault_proxy.py) that answers
  chosen requests with 503, a closed connection, truncated JSON, or never.
- The per-run timeout: the harness's own orchestration, so a fake engine that hangs.
- The harness stopped mid-batch by SIGTERM, SIGINT or SIGKILL: no process it started is left.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx
import psutil
import pytest

from harness.cli import main
from harness.core.notes import note
from harness.core.schema import EngineOutput, RunResult
from harness.engines.base import Request
from harness.inputs.cases import load_cases
from harness.judging.explain import case_lines, variant_lines
from harness.publish.report import publish
from harness.publish.results import read_results
from harness.runner import RunConfig, execute
from harness.publish.positions import loaded
from tests.conftest import CASES, FAKE
from tests.fake_engine import FakeEngine
from tests.fault_proxy import FaultProxy, Rule

pytestmark = pytest.mark.engine

ENGINE = "tests.faulty_vllm:FaultyVLLMEngine"
STALL_S = 15  # the stall clock starts once the engine has started: 15 s of silence mid-run is a hang here
REQUEST_TIMEOUT_S = 12  # the HTTP per-case timeout; the tiny model answers in about a second


def load_order(ids: set[str]) -> list[str]:
    """The cases in the order the harness sends them (alone requests go one by one in this order)."""
    return [c.id for c in load_cases([CASES]).cases if c.id in ids]


def reasons(run: RunResult, variant: str) -> dict[str, list[str]]:
    return {c.case_id: variant_lines(c.variants[variant]) for c in run.cases}


def strict_json(path: Path) -> object:
    """results.json parsed as JSON proper: Python's NaN and Infinity are refused."""
    def refuse(constant: str) -> None:
        raise AssertionError(f"{path} holds {constant}, which is not JSON")

    return json.loads(path.read_text(), parse_constant=refuse)


class Killer(threading.Thread):
    """Kills, with SIGKILL, the engine process whose PID vLLM wrote when it started to hang: once."""

    def __init__(self, pid_file: Path) -> None:
        super().__init__(daemon=True)
        self.pid_file, self.done = pid_file, threading.Event()
        self.killed: int | None = None

    def run(self) -> None:
        while not self.done.is_set():
            if self.pid_file.exists():
                self.killed = int(self.pid_file.read_text())
                self.pid_file.unlink()
                os.kill(self.killed, signal.SIGKILL)
                return
            self.done.wait(0.2)


def test_engine_killed_by_pid_then_hung_keeps_every_returned_case(tmp_path: Path, tiny_model: str,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """Batched first (all five cases), then each case alone. The second alone case hangs in vLLM and
    its engine process is killed by PID; a fresh engine runs the third; the fourth hangs and the stall
    guard stops it; with one restart allowed, the fifth is never sent."""
    first, killed, restarted, stalled, unsent = load_order(
        {"astronaut-420", "coffee-444", "two-images", "text-only", "shapes-two"})
    pid_file = tmp_path / "engine.pid"
    faults = {f"{killed}@alone": "hang", f"{stalled}@alone": "hang"}
    out = tmp_path / "out"
    killer = Killer(pid_file)
    killer.start()
    try:
        code = main(["run", "--cases", str(CASES), "--model", tiny_model, "--engine", ENGINE,
                     "--engine-option", f"case_faults={json.dumps(faults)}", "--engine-option", f"pid_file={pid_file}",
                     "--variants", "alone", "--stall-timeout", str(STALL_S), "--engine-restarts", "1",
                     "--verbose", "--out", str(out),
                     *[arg for case in (first, killed, restarted, stalled, unsent) for arg in ("--case", case)]])
    finally:
        killer.done.set()
    assert killer.killed is not None, "vLLM never reported the hang"

    run = read_results(out)  # what the run left on disk, and the report made from it
    assert code == 2 and run.status == "failed"  # gave up on the engine: the run itself did not complete
    died, stall = "engine process died (SIGKILL)", f"{ENGINE} sent nothing for {STALL_S} s (stalled) and was stopped"
    given_up = f"{stall}; no restarts left (--engine-restarts 1) for 1 more requests"
    assert run.error == given_up
    # Every case returned before a fault stands, judged: the whole batched submission and two alone cases.
    assert reasons(run, "batched") == dict.fromkeys((first, killed, restarted, stalled, unsent), [])
    assert reasons(run, "alone") == {
        first: [], restarted: [],
        killed: [f"engine error (attempt 1): {died} while this case was in flight"],
        stalled: [f"engine error (attempt 1): {stall} while this case was in flight"],
        unsent: [f"engine failed: {given_up}"],
    }
    # As records: the fault's own words, never parsed into an exception type they do not name.
    assert run.case(unsent).variants["alone"].notes == [note("engine_failed", type=None, message=given_up)]
    assert {c.case_id: c.verdict for c in run.cases} == {first: "pass", restarted: "pass", killed: "error",
                                                         stalled: "error", unsent: "error"}
    group = run.provenance.engine_groups[0]
    assert (group.restarts, group.faults) == (1, [died, stall])
    # The fresh engine was sent only what was left: each batched case ran once.
    assert capsys.readouterr().out.count(" batched ok") == 5
    strict_json(out / "results.json")
    html = (out / "index.html").read_text()
    assert "while this case was in flight" in html and "no restarts left" in html


def test_nan_inf_and_short_logprobs_fail_only_their_case(tmp_path: Path, tiny_model: str) -> None:
    """vLLM's output processor hands back one case's prompt logprobs with a NaN, another's first
    output logprob +inf, a third's logprobs one short on both sides; a fourth case is untouched.
    Non-finite values fail the case (and are written as null); a logprob short is that case's error."""
    nan, inf, short, clean = "astronaut-420", "two-images", "text-only", "shapes-two"
    faults = {nan: "nan", inf: "inf", short: "short"}
    out = tmp_path / "out"
    run = loaded(execute(RunConfig(cases=[CASES], out=out, model=tiny_model, engine=ENGINE, variants=["base"],
                                   engine_options={"case_faults": faults}, only={nan, inf, short, clean},
                                   localize="off"), progress=lambda _: None), out)
    assert run.status == "complete", run.error
    assert {c.case_id: c.verdict for c in run.cases} == {nan: "fail", inf: "fail", short: "error", clean: "pass"}
    found = reasons(run, "batched")
    assert found[nan][0] == "vs reference: non_finite: 1 non-finite logprobs (prompt)", found[nan]
    assert found[inf][0] == "vs reference: non_finite: 1 non-finite logprobs (output)", found[inf]
    # One logprob short: which position lacks it is unknown, so none can be placed: an error, not misplaced values.
    reference = run.case(short).reference
    n_prompt, n_output = len(reference.prompt_ids), len(reference.output_ids)
    assert found[short] == [f"engine error (attempt 1): ValueError: vLLM returned {n_prompt - 1} prompt logprobs for "
                            f"{n_prompt} prompt tokens and {n_output - 1} logprobs for {n_output} output tokens: "
                            "they cannot be matched to their positions"]
    assert found[clean] == []
    data = strict_json(out / "results.json")  # NaN and inf are written as null, not as Python's NaN
    assert isinstance(data, dict) and len(data["cases"]) == 4
    assert "non-finite logprobs" in publish(run, out).html.read_text()


def test_http_faults_are_that_cases_error_and_the_others_pass(tmp_path: Path, tiny_model: str,
                                                              vllm_server: tuple) -> None:
    prompts = {"shapes-two": "How many shapes are there?", "text-only": "a quiet morning by the sea",
               "two-images": "Compare the first image with the second image.",
               "coffee-444": "What is in the cup on the table?"}
    faults = {"shapes-two": "status", "text-only": "close", "two-images": "malformed", "coffee-444": "stall"}
    clean = "astronaut-420"
    path = "/v1/chat/completions"
    url = vllm_server[1]
    with FaultProxy(url, [Rule(prompts[c], fault) for c, fault in faults.items()]) as proxy:
        run = execute(RunConfig(cases=[CASES], out=tmp_path / "out", model=tiny_model, engine="vllm-server",
                                engine_url=proxy.url, engine_options={"request_timeout": REQUEST_TIMEOUT_S},
                                variants=["base"], only={*faults, clean}), progress=lambda _: None)
    assert sorted(r.fault for r in proxy.injected) == sorted(faults.values())  # each fault once: no re-sends
    assert run.status == "complete", run.error
    errors = {c.case_id: c.variants["batched"].engine.error for c in run.cases}
    assert errors[clean] is None and run.case(clean).verdict == "pass"
    assert errors["shapes-two"] == (f"HTTP 503 from {path}: "
                                    "'upstream overloaded (injected by the fault proxy)'")
    assert errors["text-only"] == (f"connection closed by the server before a complete response to {path} "
                                   "(Server disconnected without sending a response.)")
    assert errors["two-images"].startswith(f"malformed JSON from {path} at line 1 column ")
    assert "; the body starts '{" in errors["two-images"]
    assert errors["coffee-444"] == f"no response from {path} within {REQUEST_TIMEOUT_S} s (ReadTimeout)"
    for case_id, error in errors.items():
        if case_id != clean:
            case = run.case(case_id)
            assert case.verdict == "error" and case_lines(case) == [f"batched: engine error (attempt 1): {error}"]
    assert httpx.get(url + "/health").status_code == 200  # the harness never stops a server it attached to
    strict_json(tmp_path / "out" / "results.json")


class HangingEngine(FakeEngine):
    """The fake engine, except that it never returns the request named by the option `hang` ("CASE@VARIANT")."""

    def run(self, requests: Sequence[Request]) -> Iterator[EngineOutput]:
        for request in requests:
            while f"{request.case_id}@{request.variant}" == self.settings.options.get("hang"):
                time.sleep(1)
            yield self.output(request, 0.0)


def test_run_timeout_stops_the_engine_and_the_cases_not_returned_are_errors(tmp_path: Path,
                                                                           tiny_model: str) -> None:
    """--run-timeout bounds the whole run: past it the hung engine is stopped (not restarted), the case
    it was running and the ones never sent are errors, and what returned before stands."""
    first, hung, unsent = load_order({"astronaut-420", "two-images", "text-only"})
    fake = "tests.fake_engine:FakeEngine"
    run = execute(RunConfig(cases=[CASES], out=tmp_path / "out", model=tiny_model, reference_engine=fake,
                            engine="tests.test_robustness_engine:HangingEngine",
                            engine_options={"hang": f"{hung}@alone"},
                            variants=["alone"], only={first, hung, unsent}, run_timeout_s=10),
                  progress=lambda _: None)
    timeout = "run timeout of 10 s reached"
    assert run.status == "failed" and run.error == timeout
    assert reasons(run, "batched") == dict.fromkeys((first, hung, unsent), [])
    assert reasons(run, "alone") == {first: [], hung: [f"engine error (attempt 1): {timeout} while this case was "
                                                       "in flight"], unsent: [f"engine failed: {timeout}"]}
    assert [n.kind for n in run.case(hung).variants["alone"].notes] == ["engine_error"]
    assert run.provenance.engine_groups[0].restarts == 0
    assert len(read_results(tmp_path / "out").cases) == 3


REPO = Path(__file__).resolve().parents[1]
RUN_MARK = "VLM_PARITY_TEST_RUN"  # in the environment of every process a run started, however deep
STOP_S = 5.0  # what "within a few seconds" is here


def start_run(out: Path, *args: str) -> subprocess.Popen[str]:
    """`vlm-parity run` in a session of its own, with SIGINT at its default (a shell's `&` ignores it), and its
    processes marked by the output folder."""
    cmd = [sys.executable, "-m", "harness.cli", "run", *args, "--verbose", "--out", str(out)]
    return subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, env={**os.environ, "PYTHONPATH": str(REPO), RUN_MARK: str(out)},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def run_processes(out: Path) -> list[psutil.Process]:
    """Every live process of the run writing to `out`, found by the mark in its environment (a process
    reparented to init, or started after a snapshot of the tree, is found too)."""
    found = []
    for process in psutil.process_iter():
        try:
            if process.status() != psutil.STATUS_ZOMBIE and process.environ().get(RUN_MARK) == str(out):
                found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return found


def assert_none_left(out: Path) -> None:
    deadline = time.monotonic() + STOP_S
    while (left := run_processes(out)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left, f"{STOP_S:g} s after the harness was stopped: " + "; ".join(
        f"{p.pid} {' '.join(p.cmdline())[:120]}" for p in left)


def modules(out: Path) -> list[str]:
    """What the processes of the run writing to `out` now run (`python -m MODULE`)."""
    return sorted(c[2] for p in run_processes(out) if len(c := p.cmdline()) > 2 and c[1] == "-m")


def test_sigint_mid_batch_ends_the_live_reference_and_the_engine_waiting_beside_it(tmp_path: Path,
                                                                                   tiny_model: str) -> None:
    """Ctrl-C while the live (HF) reference computes its batch and the engine, started beside it, waits for
    its turn: every process of the run ends (a fake engine: the scenarios below start vLLM)."""
    out = tmp_path / "out"
    proc = start_run(out, "--model", tiny_model, "--reference", "live", "--engine", FAKE, "--variants", "base")
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("[reference] 3/"):  # mid-batch: the reference has returned some cases
                break
        threading.Thread(target=proc.stdout.read, daemon=True).start()  # a full pipe would stall the run
        running = modules(out)
        assert running.count("harness.engines.worker") == 2, running  # the reference's and the engine's
        os.kill(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=60) == -signal.SIGINT  # KeyboardInterrupt as before, once its engines are ended
        assert_none_left(out)
    finally:
        for process in run_processes(out):
            process.kill()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_run_stopped_halfway_leaves_no_process_and_exactly_the_completed_cases(
        tmp_path: Path, signum: int, capsys: pytest.CaptureFixture[str]) -> None:
    """The real vLLM engine on the default suite, cases handed back one by one (`alone`): after five, SIGTERM
    the harness (as CI cancels a job: it ends its engines first) or SIGKILL it (the engine ends itself). Within
    a few seconds no process of the run is left, and `vlm-parity report` on its folder shows exactly the cases
    on disk, as partial."""
    out = tmp_path / "out"
    proc = start_run(out, "--variants", "alone")
    announced: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith(("PASS", "FAIL", "ERROR", "KNOWN")):
                announced.append(line.split()[1])
                if len(announced) == 5:
                    break
        threading.Thread(target=proc.stdout.read, daemon=True).start()
        assert "harness.engines.worker" in modules(out)  # vLLM, mid-batch
        os.kill(proc.pid, signum)
        assert proc.wait(timeout=60) == -signum
        assert_none_left(out)
    finally:
        for process in run_processes(out):
            process.kill()
    lines = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    written = [r["case"]["case_id"] for r in lines if r["record"] == "case"]
    assert written[:5] == announced and len(written) < len(load_cases([CASES]).cases)
    assert main(["report", str(out)]) == 0
    assert f"PARTIAL run: it stopped before it ended; {len(written)} case result(s) completed" in \
        capsys.readouterr().out
    run = read_results(out)
    assert run.status == "partial" and [c.case_id for c in run.cases] == written
    html = (out / "index.html").read_text()
    assert [part.split('"', 1)[0] for part in html.split('data-case="')[1:]] == written
