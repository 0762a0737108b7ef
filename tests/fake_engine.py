"""A fake engine for the harness's own orchestration tests: registered by string
(`tests.fake_engine:FakeEngine`), no vLLM import, outputs in milliseconds.

Its outputs are a pure function of the request, so two fake engines agree
exactly unless told otherwise through `--engine-option`:
  drift=X            add X to every prompt logprob (a parity failure by metric)
  fail_cases=[ids]   those cases return an error (a per-case failure)
  die_after=N        raise after N outputs (a fatal engine error mid-run)
  drop_variant=NAME  never return that variant's outputs (an output that never arrives)
  delay_s=X          sleep X seconds before each output (a slow engine, to stop a run part way)
  ran_file=PATH      create PATH when it starts computing (to see that a held engine waited)
"""
from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from harness.core.schema import EngineOutput, Scores, TokenLogprobs
from harness.engines.base import Capabilities, Engine, EngineSettings, Request


class FakeEngine(Engine):
    name = "fake"
    capabilities = Capabilities(features=frozenset({"prefix_caching"}), request_fields=frozenset({"videos"}))

    def __init__(self, settings: EngineSettings) -> None:
        super().__init__(settings)
        self.sent = 0

    def run(self, requests: Sequence[Request]) -> Iterator[EngineOutput]:
        options = self.settings.options
        if "ran_file" in options:
            Path(options["ran_file"]).touch()
        for request in requests:
            if request.variant == options.get("drop_variant"):
                continue
            if "die_after" in options and self.sent >= options["die_after"]:
                raise RuntimeError("fake engine died")
            self.sent += 1
            time.sleep(float(options.get("delay_s", 0.0)))
            if request.case_id in options.get("fail_cases", []):
                yield EngineOutput.failed(request.case_id, self.name, "fake failure", request.variant)
                continue
            yield self.output(request, float(options.get("drift", 0.0)))

    def output(self, request: Request, drift: float) -> EngineOutput:
        seed = hashlib.sha256((request.prompt_text + "|".join(request.images)).encode()).digest()
        prompt = [b % 200 for b in seed[:24]]
        out = [200 + b % 100 for b in seed[24:24 + min(request.max_new_tokens, 8)]]

        def score(tid: int, shift: float = 0.0) -> TokenLogprobs:
            lp = -(tid % 13) / 3 - 0.1 + shift
            return TokenLogprobs(tid, lp, [(tid, lp), (tid + 1, lp - 1.0)])

        return EngineOutput(
            case_id=request.case_id, engine=self.name, variant=request.variant, prompt_ids=prompt,
            prompt_logprobs=[None] + [score(t, drift) for t in prompt[1:]], output_ids=out,
            output_logprobs=[score(t) for t in out], output_text=" ".join(f"w{t}" for t in out))


class NoPromptLogprobsEngine(FakeEngine):
    """An endpoint like a generic OpenAI server: output logprobs only."""

    name = "fake-no-prompt-logprobs"
    capabilities = Capabilities(prompt_logprobs=False, prompt_ids=False, features=frozenset())

    def output(self, request: Request, drift: float) -> EngineOutput:
        full = super().output(request, drift)
        full.prompt_ids, full.prompt_logprobs = [], Scores()
        return full
