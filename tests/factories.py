"""Synthetic RunResults for report, gate and history tests and the report benchmark.

Values are made up but shaped exactly like a real run's (same schema, same
per-position arrays), so renderers meet what a real run gives them.
"""
from __future__ import annotations

import random

from harness.config import load_config, resolve
from harness.core.notes import error_fields, note
from harness.core.provenance import Provenance
from harness.core.schema import CaseResult, EngineOutput, RunResult, TokenLogprobs, VariantResult
from harness.judging.compare import compare_outputs, judge
from harness.publish.report.thumbnails import thumbnail
from tests.conftest import CASES

IMAGE_TOKEN = 6
THRESHOLDS = resolve(load_config(), "float32")


def _side(engine: str, prompt: list[int], lps: list[float], out: list[int], out_lps: list[float],
          text: str) -> EngineOutput:
    def tl(tid: int, lp: float) -> TokenLogprobs:
        return TokenLogprobs(tid, lp, [(tid, lp), (tid + 1, lp - 0.5), (tid + 2, lp - 1.0)])

    return EngineOutput(case_id="", engine=engine, prompt_ids=prompt,
                        prompt_logprobs=[None] + [tl(t, lp) for t, lp in zip(prompt[1:], lps)],
                        output_ids=out, output_logprobs=[tl(t, lp) for t, lp in zip(out, out_lps)],
                        output_text=text)


def synthetic_case(i: int, rng: random.Random, kind: str = "pass", output_text: str | None = None,
                   thumb: str = "") -> CaseResult:
    """kind: pass (float32 noise), fail (diverging output and drifted logprobs), error (engine error)."""
    case_id = f"case-{i:04d}"
    n = rng.randint(30, 80)
    prompt = [1] + [IMAGE_TOKEN] * 12 + [rng.randint(10, 400) for _ in range(n)]
    lps = [-rng.random() * 5 for _ in prompt[1:]]
    out = [rng.randint(10, 400) for _ in range(16)]
    out_lps = [-rng.random() for _ in out]
    text = output_text if output_text is not None else " ".join(f"w{t}" for t in out)
    ref = _side("hf", prompt, lps, out, out_lps, text)
    ref.case_id = case_id
    if kind == "error":
        error = "ValueError: bad request"
        failed = VariantResult("batched", "error", engine=EngineOutput.failed(case_id, "vllm", error, "batched"),
                               notes=[note("engine_error", attempt=0, **error_fields(error))])
        return CaseResult(case_id=case_id, verdict="error",
                          tags=["synthetic", "error"], images=["img.png"], prompt_text="Describe.",
                          thumbnails=[thumb], reference=ref, variants={"batched": failed}, headline="batched")
    drift = 0.3 if kind == "fail" else 1e-6
    eng_out = list(out)
    if kind == "fail":
        eng_out[5:] = [t + 1 for t in out[5:]]
    eng = _side("vllm", prompt, [lp + rng.random() * drift for lp in lps], eng_out, out_lps,
                " ".join(f"w{t}" for t in eng_out) if output_text is None else output_text + " (engine)")
    eng.case_id = case_id
    cmp = compare_outputs(ref, eng, IMAGE_TOKEN)
    findings = judge(cmp, THRESHOLDS)
    verdict = "fail" if any(f.level == "fail" for f in findings) else "pass"
    tokens = {str(t): f"w{t} " for t in set(out) | set(eng_out) | {t + k for t in out + eng_out for k in (1, 2)}}
    batched = VariantResult("batched", verdict, [], cmp, engine=eng, findings=findings)
    alone = VariantResult("alone", "pass", [], compare_outputs(ref, ref, IMAGE_TOKEN), engine=ref)
    return CaseResult(case_id=case_id, verdict=verdict,
                      tags=["synthetic", kind, f"group{i % 5}"], images=["img.png"], prompt_text=f"Describe image {i}.",
                      thresholds=THRESHOLDS.values, reference=ref, variants={"batched": batched, "alone": alone},
                      headline="batched", tokens=tokens, thumbnails=[thumb])


def synthetic_run(n: int, fail_every: int = 10, error_every: int = 25, seed: int = 0,
                  throughput: float = 9443.0) -> RunResult:
    rng = random.Random(seed)
    thumb = thumbnail(CASES / "images" / "astronaut_420.jpg")
    cases = []
    for i in range(n):
        kind = "error" if i % error_every == error_every - 1 else "fail" if i % fail_every == fail_every - 1 else "pass"
        cases.append(synthetic_case(i, rng, kind, thumb=thumb))
    return RunResult(provenance=Provenance(engine="vllm", reference_engine="hf", model="/models/tiny",
                                           dtype="float32", date="2026-11-21T00:00:00+00:00", git_commit="abc123",
                                           throughput_tok_s=throughput, base_variant="batched",
                                           thresholds={"values": THRESHOLDS.values, "reasons": THRESHOLDS.reasons}),
                     variants=[{"name": "batched", "reason": "all cases in one submission", "features": {},
                                "engine_options": {}, "dtype": None, "request": {}, "against": ["reference"],
                                "checks": ["prefill", "decode"]},
                               {"name": "alone", "reason": "each case by itself", "features": {},
                                "engine_options": {}, "dtype": None, "request": {"submit": "alone"},
                                "against": ["reference", "base"], "checks": ["prefill", "decode"]}],
                     cases=cases, status="complete")


def with_known(run: RunResult, case_ids: list[str], variant: str, reason: str,
               reproduction: str = "repro/known.py") -> RunResult:
    """Marks `variant` of each listed case a known failure of one record (as `harness.run.known` would)."""
    for case in run.cases:
        if case.case_id in case_ids:
            cell = case.variants[variant]
            cell.verdict = "known"
            cell.notes.insert(0, note("known_failure", reason=reason, reproduction=reproduction))
            if case.verdict == "pass":
                case.verdict = "known"
    return run
