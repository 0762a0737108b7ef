"""Any OpenAI-compatible chat endpoint (llama.cpp server, LMDeploy, TGI, a hosted API).

The standard chat API returns output text and per-token output logprobs with
their top-k as strings: no prompt logprobs, no token ids. The prompt metrics
are `unavailable` (declared in the capabilities, never zero), the engine
renders its own template (the native prompt form) and decodes the original
image bytes. Output token ids are recovered by tokenizing the output text
with the checkpoint's own tokenizer; when that does not give one id per
returned logprob, the case is an error rather than a misaligned comparison.
"""
from __future__ import annotations

from typing import Any

from harness.engines.base import Capabilities, EngineSettings, Request
from harness.engines.http import HTTPEngine
from harness.engines.messages import chat_messages
from harness.schema import EngineOutput, TokenLogprobs


class OpenAIChatEngine(HTTPEngine):
    name = "openai"
    health_path = "/v1/models"
    capabilities = Capabilities(prompt_logprobs=False, prompt_ids=False, max_top_k=0,
                                prompt_forms=frozenset({"native"}), image_inputs=frozenset({"bytes"}))

    def __init__(self, settings: EngineSettings) -> None:
        super().__init__(settings)
        self.served_model = settings.options.get("served_model", settings.model)
        self._tokenizer: Any = None

    def body(self, request: Request) -> dict[str, Any]:
        """The standard chat-completions body: greedy (or the request's sampling), output logprobs."""
        body: dict[str, Any] = {"model": self.served_model, "messages": chat_messages(request),
                                "max_tokens": request.max_new_tokens, "logprobs": True}
        if request.sampling is None:
            body["temperature"] = 0.0
        else:
            body.update(temperature=request.sampling.temperature, top_p=request.sampling.top_p,
                        seed=request.sampling.seed)
        return body

    def payload(self, request: Request) -> tuple[str, dict[str, Any]]:
        return "/v1/chat/completions", self.body(request)

    def parse(self, request: Request, body: dict[str, Any]) -> EngineOutput:
        choice = body["choices"][0]
        text = choice["message"]["content"] or ""
        steps = (choice.get("logprobs") or {}).get("content") or []
        ids = self._output_ids(text)
        if len(ids) != len(steps):
            raise ValueError(f"the output text tokenizes to {len(ids)} ids but the server returned {len(steps)} "
                             "logprobs: cannot align them by token id")
        return EngineOutput(case_id=request.case_id, engine=self.name, variant=request.variant, output_ids=ids,
                            output_logprobs=[TokenLogprobs(t, float(s["logprob"])) for t, s in zip(ids, steps)],
                            output_text=text)

    def _output_ids(self, text: str) -> list[int]:
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(self.settings.model)
        return list(self._tokenizer.encode(text, add_special_tokens=False))
