"""SGLang's HTTP server: its native `POST /generate` and its OpenAI chat endpoint.

Read from SGLang 0.5.23 (PyPI wheel; see sglang_offline.py for the provenance
and for the meaning of every logprob field). Paths are under `python/sglang/`.

The harness starts `python -m sglang.launch_server --model-path M --host
127.0.0.1 --port P` (launch_server.py) with the same `ServerArgs` fields as
the offline adapter, as flags (`--` + name with dashes, booleans as
store_true: srt/arg_groups/arg_utils.py l.290, l.393-395), or attaches to
`--engine-url`. Health is `GET /health` (srt/entrypoints/http_server.py
l.721-747): 503 while the server starts, 200 once it is up.

`sglang-server`: `POST /generate` (http_server.py l.928-990) takes the
GenerateReqInput as JSON, checked against `api/v1/api_types.py`
GenerateRequest (l.236-287; sampling params l.177-205, unknown keys
rejected), and answers one object shaped as GenerateResponse (l.408: `text`,
`meta_info`, `output_ids`, `prompt_token_ids`): the same dict the offline
Engine returns, so both are read by `sglang_offline.parse_generate`. Images
go as data URLs, which SGLang's `load_image` base64-decodes
(srt/utils/common.py l.2172, l.2195-2197): a lossless PNG of the harness's
decode (`pixels`) or the original file bytes (`bytes`, decoded by SGLang). The
endpoint takes a prompt string, not chat messages: rendered form only.

`sglang-chat`: `POST /v1/chat/completions` (http_server.py l.1870;
srt/entrypoints/openai/protocol.py ChatCompletionRequest l.909-1040). SGLang
renders its own chat template (no per-request template), so this is the
native form. It asks for the prompt logprobs nowhere: serving_chat.py builds
its GenerateReqInput with `logprob_start_len=-1` (l.1373), so prompt
logprobs are unavailable. Its extras give the rest by id:
`return_prompt_token_ids` (protocol.py l.962; serving_chat.py l.1411,
l.2976-2980 -> `choices[0].prompt_token_ids`), `return_token_ids` (l.963 ->
`choices[0].response_token_ids`), `return_meta_info` (l.964 ->
`choices[0].meta_info`, the generate meta_info with `output_token_logprobs`
and `output_top_logprobs` as `[logprob, token_id, text]`, l.2985-2987), plus
`logprobs`/`top_logprobs` (l.926-927), `ignore_eos` (l.1012),
`skip_special_tokens`, `seed` (-> `sampling_seed`, l.1233) and
`max_completion_tokens` (l.933). Unset sampling fields fall back to the
checkpoint's generation_config (`to_sampling_params`, l.1185-1204), so the
body sets `top_k`, `min_p` and `repetition_penalty` explicitly too.
"""
from __future__ import annotations

import sys
from typing import Any

from harness.core.schema import EngineOutput
from harness.engines.base import Capabilities, EngineSettings, Request
from harness.engines.http import HTTPEngine
from harness.engines.messages import chat_messages, image_parts, penalty_fields, sampling_fields
from harness.engines.sglang_offline import (
    SGLANG_ENV,
    SGLangEngine,
    answer_meta,
    engine_args,
    generate_fields,
    image_token,
    output_scores,
    parse_generate,
    sampling_params,
    token_id_list,
)


class _SGLangHTTP(HTTPEngine):
    """What both SGLang endpoints share: the launch command, version and image loader."""

    version = SGLangEngine.version
    image_loader = SGLangEngine.image_loader

    def server_command(self, port: int) -> tuple[list[str], dict[str, str]]:
        s = self.settings
        command = [sys.executable, "-m", "sglang.launch_server", "--model-path", s.model,
                   "--host", "127.0.0.1", "--port", str(port)]
        for key, value in engine_args(s, self.name).items():
            flag = "--" + key.replace("_", "-")
            if value is True:
                command.append(flag)
            elif value is not False and value is not None:
                command += [flag, str(value)]
        return command, dict(SGLANG_ENV)


class SGLangServerEngine(_SGLangHTTP):
    name = "sglang-server"
    capabilities = Capabilities(max_top_k=20, prompt_forms=frozenset({"rendered"}),
                                image_inputs=frozenset({"pixels", "bytes"}), request_fields=frozenset({"penalties"}))

    def __init__(self, settings: EngineSettings) -> None:
        super().__init__(settings)
        self._image_token: int | None = None
        self._image_token_read = False

    def payload(self, request: Request) -> tuple[str, dict[str, Any]]:
        if request.prompt_form != "rendered":
            raise ValueError("SGLang's /generate takes a prompt string: the native form is sglang-chat's")
        if not self._image_token_read:
            self._image_token, self._image_token_read = image_token(self.settings.model), True
        body: dict[str, Any] = {"text": request.prompt_text, "sampling_params": sampling_params(request),
                                **generate_fields(self.settings.top_k, self._image_token)}
        if request.images:
            body["image_data"] = [part["image_url"]["url"] for part in image_parts(request)]
        return "/generate", body

    def parse(self, request: Request, body: dict[str, Any]) -> EngineOutput:
        return parse_generate(request, self.name, body, self.settings.top_k)


class SGLangChatEngine(_SGLangHTTP):
    name = "sglang-chat"
    capabilities = Capabilities(prompt_logprobs=False, max_top_k=20, prompt_forms=frozenset({"native"}),
                                image_inputs=frozenset({"bytes", "pixels"}), request_fields=frozenset({"penalties"}))

    def __init__(self, settings: EngineSettings) -> None:
        super().__init__(settings)
        self.served_model = settings.options.get("served_model", settings.model)

    def server_command(self, port: int) -> tuple[list[str], dict[str, str]]:
        command, env = super().server_command(port)
        return command + ["--served-model-name", self.served_model], env

    def payload(self, request: Request) -> tuple[str, dict[str, Any]]:
        k = self.settings.top_k
        body: dict[str, Any] = {
            "model": self.served_model, "messages": chat_messages(request),
            "max_completion_tokens": request.max_new_tokens, "ignore_eos": True, "skip_special_tokens": True,
            "logprobs": True, "top_logprobs": k, "return_prompt_token_ids": True, "return_token_ids": True,
            "return_meta_info": True, "top_k": -1, "min_p": 0.0, "repetition_penalty": 1.0,
            **sampling_fields(request), **penalty_fields(request),
        }
        return "/v1/chat/completions", body

    def parse(self, request: Request, body: dict[str, Any]) -> EngineOutput:
        choice = body["choices"][0]
        if choice.get("finish_reason") == "abort":
            raise ValueError("SGLang aborted the request")
        meta = answer_meta(choice.get("meta_info"))
        output_ids = token_id_list(choice.get("response_token_ids"), "choices[0].response_token_ids")
        return EngineOutput(
            case_id=request.case_id, engine=self.name, variant=request.variant,
            prompt_ids=token_id_list(choice.get("prompt_token_ids"), "choices[0].prompt_token_ids"),
            output_ids=output_ids, output_logprobs=output_scores(meta, output_ids, self.settings.top_k),
            output_text=choice["message"]["content"] or "")
