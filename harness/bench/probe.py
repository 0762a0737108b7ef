"""What runs inside each measured subprocess: `python -m harness.bench.probe MODE --report FILE ...`.

The bench measures every subprocess from the outside (wall time, memory of its
process tree); the probe adds what only the inside can see and writes it as
JSON to `--report`:

- `run -- ARGS`: `vlm-parity ARGS` exactly as the CLI runs it, with an observer that hears the
  harness's stages and records every engine stream (its spec saved with `--record`, so the
  engine and the reference can be re-run alone on the very same requests).
- `stream SPEC`: one recorded engine stream alone, through `harness.engines.client.stream`.
- `per-case`: the engine-per-case style of vLLM's own tests: for each case a fresh reference
  and a fresh engine, started, run on that case, closed (in this process, or each in its own).
- `load`: model resolution, processor and reference model load, imports apart.
- `scale`: the harness at an engine team's size (`harness.bench.scale`): a run whose synthetic engine and
  reference run in this process, then the sizes of what it wrote.
- `cli -- ARGS`: any `vlm-parity ARGS` in this process (report, merge, gate), its exit status reported.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from harness.engines import lifetime

STARTED = time.perf_counter()


def _observer(record_dir: Path | None) -> Any:
    """The run's observer (`harness.run.observe`), extended to record and time every engine stream it opens:
    the bench measures through the runner's own interface, never by patching its names."""
    from harness.run.observe import Observer

    class BenchObserver(Observer):
        def __init__(self) -> None:
            super().__init__()
            self.streams: list[dict[str, Any]] = []

        def stream(self, role: str, engine: str, settings: Any, requests: list[Any], outputs: Iterator[Any],
                   side: Any) -> Iterator[Any]:
            entry: dict[str, Any] = {"role": role, "engine": engine, "requests": len(requests)}
            if record_dir is not None:  # saved so the engine can be re-run alone on the very same requests
                record_dir.mkdir(parents=True, exist_ok=True)
                spec = record_dir / f"stream-{len(self.streams)}.json"
                spec.write_text(json.dumps({"engine": engine, "role": role, "settings": asdict(settings),
                                            "requests": [asdict(r) for r in requests]}))
                entry["spec"] = str(spec)
            self.streams.append(entry)
            return self._timed(entry, outputs, side)

        @staticmethod
        def _timed(entry: dict[str, Any], outputs: Iterator[Any], side: Any) -> Iterator[Any]:
            start, count = time.perf_counter(), 0  # from its first read: the runner reads several streams at once
            for output in outputs:
                count += 1
                yield output
            end = time.perf_counter()
            # start_s/end_s: from the probe's start, so overlapping streams can be merged into one span
            entry.update(total_s=end - start, start_s=start - STARTED, end_s=end - STARTED, outputs=count,
                         run_s=side.run_s, fatal=side.fatal)

    return BenchObserver()


def probe_run(argv: list[str], record_dir: Path | None) -> dict[str, Any]:
    """`vlm-parity run ARGS` as the CLI runs it (`harness.runner.run_command`), timed by stage."""
    from harness.publish.results import read_results
    from harness.run.observe import STAGES
    from harness.run.options import add_options, run_config
    from harness.runner import run_command

    parser = argparse.ArgumentParser(prog="vlm-parity run")
    add_options(parser.add_argument)
    cfg = run_config(lambda name: getattr(parser.parse_args(argv[1:] if argv[:1] == ["run"] else argv), name))
    observer = _observer(record_dir)
    start = time.perf_counter()
    exit_code = run_command(cfg, observer)
    observer.seconds["whole_run"] = time.perf_counter() - start
    observer.calls["whole_run"] = 1
    timers = {"seconds": observer.seconds, "calls": observer.calls,
              "missing": [s for s in STAGES if s not in observer.seconds]}
    try:
        provenance = read_results(cfg.out).provenance
    except ValueError:  # the run wrote nothing readable; its exit code and log say why
        provenance = None
    return {"exit": exit_code, "timers": timers, "streams": observer.streams,
            "stage_s": provenance.stage_s if provenance else None,
            "engine_run_s": provenance.engine_run_s if provenance else None}


def probe_stream(spec_path: Path) -> dict[str, Any]:
    from harness.engines.base import EngineSettings, Request
    from harness.engines.client import EngineSide, stream

    spec = json.loads(spec_path.read_text())
    settings = EngineSettings.from_dict(spec["settings"])
    requests = [Request.from_dict(r) for r in spec["requests"]]
    side = EngineSide()
    start = time.perf_counter()
    outputs = list(stream(spec["engine"], settings, requests, side, lambda line: None, spec["role"],
                          spec.get("stall_s") or 600.0))
    # Requests the engine refuses are part of the work it did in the run (reject-then-reuse, a known engine
    # bug): counted, not a failed measurement; only an engine that broke off is.
    errors = sum(1 for o in outputs if o.error)
    return {"total_s": time.perf_counter() - start, "run_s": side.run_s, "fatal": side.fatal,
            "outputs": len(outputs), "errors": errors, "exit": 2 if side.fatal else 0}


def probe_per_case(cases: list[Path], model: str | None, engine: str, reference: str,
                   fresh_process: bool) -> dict[str, Any]:
    """Each case with its own reference and engine, as a test per case would: constructed in this process
    (imports paid once, as in one pytest session), or with `fresh_process` each in a worker process of
    its own (start-up paid per case, as where each engine start spawns its own engine process)."""
    from harness.engines.base import EngineSettings, Request, resolve_engine
    from harness.engines.client import EngineSide, stream
    from harness.inputs.cases import load_cases
    from harness.inputs.models import resolve_model
    from harness.inputs.prompt import Prompter

    path = resolve_model(model)
    prompter = Prompter(path)
    settings = EngineSettings(path, chat_template=prompter.chat_template)
    per_case = []
    errors = 0
    for case in load_cases(cases).cases:
        request = Request(case.id, prompter.render(case), "base", case.messages, tuple(map(str, case.images)),
                          max_new_tokens=case.max_new_tokens)
        times = {}
        for role, name in (("reference", reference), ("engine", engine)):
            start = time.perf_counter()
            if fresh_process:
                side = EngineSide()
                errors += sum(1 for o in stream(name, settings, [request], side, lambda line: None, role) if o.error)
                errors += side.fatal is not None
            else:
                instance = resolve_engine(name)(settings)
                instance.start([request])
                errors += sum(1 for o in instance.run([request]) if o.error)
                instance.close()
                del instance
                gc.collect()
            times[role] = time.perf_counter() - start
        per_case.append({"case": case.id, **times})
    return {"cases": per_case, "errors": errors, "exit": 2 if errors else 0}


def probe_load(model: str | None) -> dict[str, Any]:
    """Where model loading goes, imports timed apart so they are not counted twice."""
    seconds = {}
    start = time.perf_counter()
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from harness.inputs.models import resolve_model
    seconds["imports"] = time.perf_counter() - start
    start = time.perf_counter()
    path = resolve_model(model)
    seconds["model_resolve"] = time.perf_counter() - start
    start = time.perf_counter()
    AutoProcessor.from_pretrained(path)
    seconds["processor_load"] = time.perf_counter() - start
    start = time.perf_counter()
    AutoModelForImageTextToText.from_pretrained(path, dtype=torch.float32).eval()
    seconds["reference_model_load"] = time.perf_counter() - start
    return {"seconds": seconds}


def probe_scale(cases: Path, out: Path, positions: int, model: str | None) -> dict[str, Any]:
    """The scale run, timed by stage, with what the synthetic engines took out of it and what it wrote."""
    from harness.bench.scale import SyntheticEngine, run_config
    from harness.engines.inline import inline
    from harness.run.observe import Observer
    from harness.runner import run_and_publish

    observer = Observer()
    start, cpu = time.perf_counter(), time.thread_time()
    done = run_and_publish(run_config(cases, out, positions, model), lambda line: None, observer, launcher=inline)
    wall, cpu = time.perf_counter() - start, time.thread_time() - cpu
    cells = [v for c in done.run.cases for v in c.variants.values() if v.verdict != "skipped"]
    compared = sum(v.comparison.prompt_len_reference + v.comparison.decode_len for v in cells if v.comparison)
    store = out / "positions"
    # The harness's own work is this thread's CPU time: the synthetic engines run in other threads (their time,
    # waits for the interpreter lock included, is `synthetic_s`).
    return {"exit": done.exit_code, "run_s": wall, "harness_cpu_s": cpu, "synthetic_s": SyntheticEngine.seconds,
            "seconds": observer.seconds, "cases": len(done.run.cases), "cells": len(cells), "positions": compared,
            "counts": done.run.counts(), "results_mb": (out / "results.json").stat().st_size / 2**20,
            "store_mb": sum(p.stat().st_size for p in store.glob("*.parquet")) / 2**20,
            "html_mb": done.html.stat().st_size / 2**20}


def probe_cli(argv: list[str]) -> dict[str, Any]:
    from harness.cli import main as cli

    start = time.perf_counter()
    code = cli(argv)
    return {"exit": code, "total_s": time.perf_counter() - start}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.bench.probe")
    parser.add_argument("mode", choices=("run", "stream", "per-case", "load", "scale", "cli"))
    parser.add_argument("--report", type=Path, required=True, help="where the probe writes its JSON")
    parser.add_argument("--record", type=Path, help="run: folder for the recorded stream specs")
    parser.add_argument("--spec", type=Path, help="stream: a recorded spec")
    parser.add_argument("--cases", type=Path, nargs="+", help="per-case: case files or folders")
    parser.add_argument("--model")
    parser.add_argument("--engine", default="vllm")
    parser.add_argument("--reference-engine", default="hf")
    parser.add_argument("--fresh-process", action="store_true", help="per-case: each engine in its own process")
    parser.add_argument("--out", type=Path, help="scale: the run's folder")
    parser.add_argument("--positions", type=int, default=1500, help="scale: prompt positions per output")
    lifetime.bind(os.getppid())  # a stopped or killed bench ends this probe and its engines
    argv = sys.argv[1:] if argv is None else argv
    split = argv.index("--") if "--" in argv else len(argv)  # run: after `--`, the vlm-parity arguments
    args = parser.parse_args(argv[:split])
    if args.mode == "run":
        report = probe_run(argv[split + 1:], args.record)
    elif args.mode == "stream":
        report = probe_stream(args.spec)
    elif args.mode == "scale":
        report = probe_scale(args.cases[0], args.out, args.positions, args.model)
    elif args.mode == "cli":
        report = probe_cli(argv[split + 1:])
    elif args.mode == "per-case":
        report = probe_per_case(args.cases, args.model, args.engine, args.reference_engine, args.fresh_process)
    else:
        report = probe_load(args.model)
    args.report.write_text(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
