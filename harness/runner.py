"""A parity run: cases -> reference outputs -> engine outputs -> verdicts -> results.

The reference runs first, then the engine, each in its own process (see
`engines.worker`); each case is compared, judged and written as soon as the
engine returns it. Every failure below the run itself becomes that case's
`error` result with its reason.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from harness import __version__, config
from harness.cases import Case, CaseProblem, load_cases
from harness.compare import compare_outputs, judge
from harness.decode.diff import case_pixel_deltas
from harness.engines import EngineSettings, Request
from harness.models import default_model_dir, image_token_id, model_fingerprint
from harness.report.thumbnails import thumbnail
from harness.results import write_results
from harness.schema import CaseResult, DecodeEffect, EngineOutput, RunResult

Progress = Callable[[str], None]


@dataclass
class RunConfig:
    """Everything a run needs; the CLI and the pytest plugin both build one."""

    cases: list[Path]
    out: Path
    engine: str = "vllm"
    model: str | None = None  # None: the built-in tiny model
    reference_model: str | None = None  # None: same as model
    reference_engine: str = "hf"
    dtype: str = "float32"
    reference_dtype: str | None = None  # None: same as dtype
    device: str = "cpu"
    reference_device: str | None = None  # None: same as device
    decoder: str = "pil"  # how the engine's images are decoded; the reference always uses PIL
    decode_effect: str | None = None  # also run the engine on this decoder's pixels, side by side
    engine_options: dict[str, Any] = field(default_factory=dict)
    thresholds_file: Path | None = None
    only: set[str] | None = None  # case ids to run; None: all
    top_k: int = 5


@dataclass
class _Side:
    """Where one side of the comparison stands while the run goes on."""

    outputs: dict[str, EngineOutput] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    run_s: float | None = None
    fatal: str | None = None


def execute(cfg: RunConfig, progress: Progress = print) -> RunResult:
    """Run every case; results.json is rewritten after each one."""
    model = cfg.model or str(default_model_dir())
    reference_model = cfg.reference_model or model
    dtype_key = config.effective_dtype(cfg.dtype, cfg.reference_dtype or cfg.dtype)
    thresholds_config = config.load_config(cfg.thresholds_file)
    run = RunResult(provenance={
        "harness_version": __version__,
        "git_commit": _git_commit(),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "engine": cfg.engine, "model": model, "model_sha256": _fingerprint(model),
        "reference_engine": cfg.reference_engine, "reference_model": reference_model,
        "reference_model_sha256": _fingerprint(reference_model),
        "dtype": cfg.dtype, "reference_dtype": cfg.reference_dtype or cfg.dtype, "device": cfg.device,
        "decoder": cfg.decoder, "decode_effect": cfg.decode_effect, "engine_options": cfg.engine_options,
        "cases": [str(p) for p in cfg.cases],
        "thresholds": asdict(config.resolve(thresholds_config, dtype_key, model)),
    })

    def add(result: CaseResult) -> None:
        run.cases.append(result)
        write_results(run, cfg.out)
        line = f"{result.verdict.upper():5} {result.case_id}"
        progress(line + (f"  ({'; '.join(result.reasons)})" if result.reasons else ""))

    loaded = load_cases(cfg.cases)
    problems: dict[str, list[CaseProblem]] = {}
    for problem in loaded.problems:
        problems.setdefault(problem_id(problem), []).append(problem)
    for case_id, found in problems.items():
        if cfg.only is None or case_id in cfg.only:
            add(CaseResult(case_id=case_id, verdict="error", reasons=[f"invalid case: {p}" for p in found],
                           source=str(found[0].file)))
    cases = [c for c in loaded.cases if cfg.only is None or c.id in cfg.only]
    for case_id in sorted((cfg.only or set()) - {c.id for c in loaded.cases} - set(problems)):
        add(CaseResult(case_id=case_id, verdict="error", reasons=[f"no case {case_id!r} in {cfg.cases}"]))
    # A partial run (--case, pytest -k) is no baseline for the nightly history.
    run.provenance["partial"] = cfg.only is not None and not {c.id for c in loaded.cases} | set(problems) <= cfg.only
    prompter = _Prompter(reference_model)
    requests: dict[str, Request] = {}
    for case in cases:
        try:
            prompt = prompter.render(case)
        except Exception as exc:
            add(_case_result(case, "", "error", [f"cannot render the chat template: {exc}"], {}))
            continue
        requests[case.id] = Request(case.id, prompt, tuple(map(str, case.images)), cfg.decoder, case.max_new_tokens)
    write_results(run, cfg.out)

    reference = _Side()
    ref_settings = EngineSettings(reference_model, cfg.reference_dtype or cfg.dtype,
                                  cfg.reference_device or cfg.device, cfg.top_k)
    ref_requests = [Request(r.case_id, r.prompt_text, r.images, "pil", r.max_new_tokens) for r in requests.values()]
    for output in _stream(cfg.reference_engine, ref_settings, ref_requests, reference, progress, "reference"):
        reference.outputs[output.case_id] = output

    engine = _Side()
    settings = EngineSettings(model, cfg.dtype, cfg.device, cfg.top_k, options=cfg.engine_options)
    judge_case = _Judge(thresholds_config, dtype_key, model, image_token_id(reference_model), prompter)
    by_id = {c.id: c for c in cases}
    runnable = [r for r in requests.values() if (ref := reference.outputs.get(r.case_id)) and ref.error is None]
    # With --decode-effect, each case with images is also sent with the other
    # decoder's pixels, in the same engine start, as "<case id>@<decoder>".
    variants = [replace(r, case_id=f"{r.case_id}@{cfg.decode_effect}", decoder=cfg.decode_effect)
                for r in runnable if cfg.decode_effect and r.images]
    waiting = {r.case_id: {r.case_id} for r in runnable}
    for v in variants:
        waiting[v.case_id.split("@")[0]].add(v.case_id)

    def finish(case_id: str) -> None:
        del waiting[case_id]
        variant = engine.outputs.get(f"{case_id}@{cfg.decode_effect}") if cfg.decode_effect else None
        if variant is None and by_id[case_id].images and cfg.decode_effect:
            variant = EngineOutput.failed(case_id, cfg.engine, "engine ended before returning this variant")
        add(judge_case(by_id[case_id], requests[case_id], reference.outputs[case_id], engine.outputs[case_id],
                       variant, cfg.decode_effect))

    for output in _stream(cfg.engine, settings, runnable + variants, engine, progress, "engine"):
        engine.outputs[output.case_id] = output
        base = output.case_id.split("@")[0]
        waiting[base].discard(output.case_id)
        if not waiting[base]:
            finish(base)
    for case_id in [c for c in waiting if c in engine.outputs]:
        finish(case_id)

    done = {c.case_id for c in run.cases}
    for case_id, request in requests.items():
        if case_id in done:
            continue
        ref = reference.outputs.get(case_id)
        reason = (f"reference failed: {ref.error}" if ref is not None and ref.error
                  else f"engine failed: {engine.fatal}" if engine.fatal
                  else f"reference failed: {reference.fatal}" if reference.fatal
                  else "engine process ended before returning this case")
        add(_case_result(by_id[case_id], request.prompt_text, "error", [reason], {}, reference=ref))

    run.provenance.update(reference_info=reference.info, engine_info=engine.info,
                          engine_run_s=engine.run_s, throughput_tok_s=_throughput(engine))
    run.error = engine.fatal or reference.fatal
    run.status = "failed" if run.error else "complete"
    write_results(run, cfg.out)
    return run


@dataclass
class _Judge:
    """Turns one case's outputs into its CaseResult: thresholds, comparison, verdict."""

    thresholds_config: dict[str, Any]
    dtype_key: str
    model: str
    image_token: int | None
    prompter: _Prompter

    def __call__(self, case: Case, request: Request, reference: EngineOutput, output: EngineOutput,
                 variant: EngineOutput | None, decoder: str | None) -> CaseResult:
        try:
            return self._judge(case, request, reference, output, variant, decoder)
        except Exception as exc:  # a harness bug on one case must not end the run
            return _case_result(case, request.prompt_text, "error",
                                [f"harness error judging this case: {type(exc).__name__}: {exc}"], {},
                                reference=reference, engine=output)

    def _judge(self, case: Case, request: Request, reference: EngineOutput, output: EngineOutput,
               variant: EngineOutput | None, decoder: str | None) -> CaseResult:
        prompt = request.prompt_text
        try:
            th = config.resolve(self.thresholds_config, self.dtype_key, self.model, case.thresholds)
        except ValueError as exc:
            return _case_result(case, prompt, "error", [f"{case.source}: case {case.id!r}: field 'thresholds': {exc}"],
                                {}, reference=reference, engine=output)
        if output.error:
            result = _case_result(case, prompt, "error", [f"engine error: {output.error}"], th.values,
                                  reference=reference, engine=output)
        else:
            comparison = compare_outputs(reference, output, self.image_token)
            verdict, reasons = judge(comparison, th)
            result = _case_result(case, prompt, verdict, reasons, th.values, comparison=comparison,
                                  reference=reference, engine=output)
        result.tokens = self.prompter.token_texts(reference, output)
        if variant is not None and decoder is not None:
            result.decode_effect = self._decode_effect(case, reference, variant, decoder, th)
        return result

    def _decode_effect(self, case: Case, reference: EngineOutput, variant: EngineOutput, decoder: str,
                       th: config.Thresholds) -> DecodeEffect:
        deltas = case_pixel_deltas(case.images, decoder)
        if variant.error:
            return DecodeEffect(decoder, "error", [f"engine error with {decoder} pixels: {variant.error}"],
                                pixel_deltas=deltas)
        comparison = compare_outputs(reference, variant, self.image_token)
        verdict, reasons = judge(comparison, th)
        return DecodeEffect(decoder, verdict, reasons, comparison, deltas)


def _case_result(case: Case, prompt_text: str, verdict: str, reasons: list[str], thresholds: dict,
                 **outputs: Any) -> CaseResult:
    return CaseResult(case_id=case.id, verdict=verdict, reasons=reasons, source=str(case.source),
                      tags=list(case.tags), images=[str(p) for p in case.images], prompt_text=prompt_text,
                      thresholds=thresholds, thumbnails=[thumbnail(p) for p in case.images], **outputs)


class _Prompter:
    """The reference's processor: renders each case's chat once (every engine
    gets this text) and turns token ids into text for the report."""

    def __init__(self, model: str) -> None:
        from transformers import AutoProcessor

        self.processor = AutoProcessor.from_pretrained(model)

    def render(self, case: Case) -> str:
        return self.processor.apply_chat_template(list(case.messages), tokenize=False, add_generation_prompt=True)

    def token_texts(self, *outputs: EngineOutput) -> dict[str, str]:
        """Text of every output token and every top-k candidate, keyed by id."""
        ids = {t for o in outputs for t in o.output_ids}
        ids |= {t for o in outputs for step in o.output_logprobs for t, _ in step.top}
        return {str(i): self.processor.decode([i]) for i in sorted(ids)}


def problem_id(problem: CaseProblem) -> str:
    """The id a case problem is reported under; a file-level problem is named by its file."""
    return problem.case_id or f"<{problem.file}>"


def _stream(engine: str, settings: EngineSettings, requests: list[Request], side: _Side, progress: Progress,
            role: str) -> Iterator[EngineOutput]:
    """Start `engine` in a worker process and yield its outputs as they arrive."""
    if not requests:
        return
    progress(f"[{role}] starting {engine} ({settings.model}, {settings.dtype}, {settings.device}) "
             f"for {len(requests)} cases")
    spec = {"engine": engine, "settings": asdict(settings), "requests": [asdict(r) for r in requests]}
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(spec, f)
    read_fd, write_fd = os.pipe()
    proc = None
    try:
        proc = subprocess.Popen([sys.executable, "-m", "harness.engines.worker", f.name, str(write_fd)],
                                pass_fds=(write_fd,))
        os.close(write_fd)
        done = 0
        with open(read_fd) as messages:
            for line in messages:
                message = json.loads(line)
                if message["kind"] == "info":
                    side.info = message["info"]
                elif message["kind"] == "fatal":
                    side.fatal = message["error"]
                elif message["kind"] == "done":
                    side.run_s = message["run_s"]
                else:
                    output = EngineOutput.from_dict(message["output"])
                    done += 1
                    status = f"error: {output.error}" if output.error else "ok"
                    progress(f"[{role}] {done}/{len(requests)} {output.case_id} {status}")
                    yield output
        code = proc.wait()
        if code != 0 and side.fatal is None and side.run_s is None:
            side.fatal = f"{engine} process exited with code {code}"
    finally:
        if proc is not None and proc.poll() is None:  # the harness itself broke (or Ctrl-C): no orphan engine
            proc.kill()
            proc.wait()
        os.unlink(f.name)


def _throughput(side: _Side) -> float | None:
    """Generated tokens per second of engine run time (start-up excluded)."""
    tokens = sum(len(o.output_ids) for o in side.outputs.values() if o.error is None)
    return tokens / side.run_s if side.run_s and tokens else None


def _fingerprint(model: str) -> str | None:
    """Weights hash of a local checkpoint; None for a hub id (its revision names it)."""
    return model_fingerprint(Path(model)) if Path(model).is_dir() else None


def _git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                              timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
