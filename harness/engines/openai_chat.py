"""Any OpenAI-compatible chat endpoint (llama.cpp server, LMDeploy, TGI, a hosted API).

The standard chat API returns the output text and, per output token, a token
*string* with its logprob: no prompt logprobs and no token ids. Token strings
cannot be turned back into ids (re-tokenizing the text splits it differently
from how it was generated: measured on vLLM's server, the same text came back
as other ids at step 10), so every logprob and id metric is `unavailable`
through the declared capabilities, never zero, and what is compared is the
output text (ROUGE-L, exact at float32). The engine renders its own template
(the native prompt form) and decodes the original image bytes.
"""
from __future__ import annotations

from typing import Any

from harness.core.schema import EngineOutput
from harness.engines.base import Capabilities, EngineSettings, Request
from harness.engines.http import HTTPEngine
from harness.engines.messages import chat_messages, sampling_fields


class OpenAIChatEngine(HTTPEngine):
    name = "openai"
    health_path = "/v1/models"
    capabilities = Capabilities(prompt_logprobs=False, prompt_ids=False, output_ids=False, output_logprobs=False,
                                max_top_k=0, prompt_forms=frozenset({"native"}), image_inputs=frozenset({"bytes"}))

    def __init__(self, settings: EngineSettings) -> None:
        super().__init__(settings)
        self.served_model = settings.options.get("served_model", settings.model)

    def payload(self, request: Request) -> tuple[str, dict[str, Any]]:
        """The standard chat-completions body: greedy (or the request's sampling)."""
        return "/v1/chat/completions", {"model": self.served_model, "messages": chat_messages(request),
                                        "max_tokens": request.max_new_tokens, **sampling_fields(request)}

    def parse(self, request: Request, body: dict[str, Any]) -> EngineOutput:
        text = body["choices"][0]["message"]["content"]
        if not isinstance(text, str):
            raise ValueError(f"choices[0].message.content is {type(text).__name__}, not text")
        return EngineOutput(case_id=request.case_id, engine=self.name, variant=request.variant, output_text=text)
