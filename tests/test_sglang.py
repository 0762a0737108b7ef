"""The SGLang adapters: requests built and answers read exactly as SGLang's source defines them.

SGLang has no CPU path from PyPI (docs/vllm-cpu.md), so the mapping is tested on
answers built here the way SGLang 0.5.23 builds them (paths under
`python/sglang/` of sgl-project/sglang, lines of the 0.5.23 wheel), and the
real engine runs only where `import sglang` works with a CUDA GPU.
"""
from __future__ import annotations

import base64
import importlib.util
import io
import json
import sys
import types
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from harness.core.schema import EngineOutput, TokenLogprobs
from harness.engines.base import EngineSettings, Penalties, Request, Sampling, resolve_engine
from harness.engines.sglang_offline import SGLangEngine, engine_args, parse_generate
from harness.engines.sglang_server import SGLangChatEngine, SGLangServerEngine
from harness.judging.compare import compare_outputs
from harness.run.plan import base_features, engine_settings, engine_skip_reason
from harness.run.variants import load_variants
from tests.conftest import CASES

IMAGE = 6  # the image placeholder id of these answers
VOCAB = 512  # model_config.vocab_size of these answers
K = 3
PNG = str(CASES / "images" / "tiny.png")
JPEG = str(CASES / "images" / "coffee_444.jpg")

# The JSON keys SGLang's HTTP contract knows (api/v1/api_types.py): GenerateRequest
# l.236-287 ignores unknown keys, SamplingParams l.177-205 rejects them.
GENERATE_KEYS = {
    "rid", "text", "input_ids", "stream", "sampling_params", "return_logprob", "logprob_start_len",
    "top_logprobs_num", "token_ids_logprob", "return_hidden_states", "return_text_in_logprobs", "image_data",
    "return_prompt_token_ids", "modalities", "lora_path", "session_params", "custom_logit_processor",
}
SAMPLING_KEYS = {
    "max_new_tokens", "stop", "stop_token_ids", "stop_regex", "temperature", "top_p", "top_k", "min_p",
    "frequency_penalty", "presence_penalty", "repetition_penalty", "min_new_tokens", "n", "json_schema", "regex",
    "ebnf", "structural_tag", "ignore_eos", "skip_special_tokens", "spaces_between_special_tokens", "no_stop_trim",
    "stream_interval", "logit_bias", "sampling_seed", "custom_params", "beam_width", "watermark", "choice",
}
# ChatCompletionRequest fields used here (srt/entrypoints/openai/protocol.py l.909-1040).
CHAT_KEYS = {
    "messages", "model", "logprobs", "top_logprobs", "max_completion_tokens", "seed", "temperature", "top_p",
    "return_prompt_token_ids", "return_token_ids", "return_meta_info", "top_k", "min_p", "repetition_penalty",
    "ignore_eos", "skip_special_tokens", "frequency_penalty", "presence_penalty",
}


def settings(**kw: Any) -> EngineSettings:
    return EngineSettings(**{"model": "/models/tiny", "top_k": K, **kw})


def request(**kw: Any) -> Request:
    return Request(**{"case_id": "c1", "prompt_text": "<|vision_start|><|image_pad|><|vision_end|>Hi",
                      "variant": "batched", "images": (PNG,), **kw})


def entries(logprobs: list[float | None], ids: list[int], texts: list[str] | None = None) -> list[Any]:
    """`detokenize_logprob_tokens` (srt/managers/tokenizer_manager.py l.3098-3116): (logprob, id, text)
    tuples, text None unless return_text_in_logprobs; JSON makes them lists."""
    return [list(t) for t in zip(logprobs, ids, texts or [None] * len(ids))]


def top_rows(rows: list[list[tuple[int, float]] | None]) -> list[Any]:
    """`detokenize_top_logprobs_tokens` (l.3118-3135): a row per position, None where it has no values."""
    return [None if row is None else entries([lp for _, lp in row], [t for t, _ in row]) for row in rows]


def sglang_answer(prompt_ids: list[int], scores: list[float], tops: list[list[tuple[int, float]]],
                  output_ids: list[int], output_lps: list[float], output_tops: list[list[tuple[int, float]]],
                  image_lps: dict[int, float] | None = None, text: str = "a cat") -> dict[str, Any]:
    """A generate answer built as SGLang builds it, with `logprob_start_len=0`.

    `scores[i]` is the engine's logprob of prompt token i+1 given the tokens
    before it; `tops[i]` the top-k there. The scheduler replaces each image
    placeholder by a pad value (scheduler.py l.3219-3225), scores that position
    as token vocab_size-1 (schedule_batch.py l.3052-3054), returns its id
    clipped to 0 and prepends None / pops the last row
    (scheduler_components/logprob_result_processor.py l.38, l.51-54, l.66-81,
    l.114-147). `prompt_token_ids` are the processor's ids before padding
    (tokenizer_manager.py l.2094, l.2674); the dict is l.2667-2674.
    """
    padded = [(1 << 61) + i if t == IMAGE else t for i, t in enumerate(prompt_ids)]
    raw = list(scores) + [-0.1]  # the scheduler computes one more (the sampling position) and drops it
    val = [None] + raw[:-1]
    idx = [x if x < VOCAB - 1 else 0 for x in padded]
    top_val = [None] + [[lp for _, lp in row] for row in tops] + [[-0.1]]
    top_idx = [None] + [[t for t, _ in row] for row in tops] + [[0]]
    top_val.pop()
    top_idx.pop()
    meta: dict[str, Any] = {
        "id": "rid-1", "finish_reason": {"type": "length", "length": len(output_ids)},
        "prompt_tokens": len(prompt_ids), "completion_tokens": len(output_ids), "cached_tokens": 0,
        "input_token_logprobs": entries(val, idx),
        "output_token_logprobs": entries(output_lps, output_ids),
        "output_token_logprobs_length": len(output_ids),
        "input_top_logprobs": [None if v is None else entries(v, i) for v, i in zip(top_val, top_idx)],
        "output_top_logprobs": top_rows(output_tops),
    }
    if image_lps is not None:  # token_ids_logprob=[IMAGE]: one [logprob, IMAGE, None] per scored position
        meta["input_token_ids_logprobs"] = [None] + [entries([image_lps.get(i, -20.0)], [IMAGE])
                                                     for i in range(1, len(prompt_ids))]
    return json.loads(json.dumps({"text": text, "output_ids": output_ids, "meta_info": meta,
                                  "prompt_token_ids": prompt_ids}))


def text_answer() -> dict[str, Any]:
    return sglang_answer(
        prompt_ids=[1, 40, 41, 42], scores=[-1.5, -0.25, -2.0],
        tops=[[(40, -1.5), (7, -1.6), (9, -3.0), (8, -4.0)], [(41, -0.25), (3, -2.0), (4, -2.5), (5, -6.0)],
              [(2, -0.5), (42, -2.0), (3, -2.2), (6, -7.0)]],
        output_ids=[50, 51], output_lps=[-0.1, -0.3],
        output_tops=[[(50, -0.1), (52, -2.5), (53, -3.0), (54, -4.0)], [(51, -0.3), (50, -1.5), (55, -3.5), (1, -9)]])


def image_answer(image_lps: dict[int, float] | None) -> dict[str, Any]:
    # positions 2 and 3 hold the image placeholder; SGLang's logprob there is that of token VOCAB-1 (-9.5)
    return sglang_answer(
        prompt_ids=[1, 5, IMAGE, IMAGE, 7, 40], scores=[-2.0, -9.5, -9.5, -1.0, -0.5],
        tops=[[(5, -2.0), (9, -2.1), (3, -2.5)], [(IMAGE, -0.01), (9, -6.0), (3, -7.0)],
              [(9, -0.5), (3, -1.0), (4, -1.5)], [(7, -1.0), (3, -1.1), (4, -2.0)], [(40, -0.5), (3, -1.0), (4, -3.0)]],
        output_ids=[50], output_lps=[-0.2], output_tops=[[(50, -0.2), (51, -1.8), (52, -2.0)]], image_lps=image_lps)


# --- parsing the generate answer (offline Engine and /generate share it) ---


def test_prompt_logprobs_align_with_prompt_ids_and_position_zero_is_none() -> None:
    out = parse_generate(request(), "sglang", text_answer(), K)
    assert out.prompt_ids == [1, 40, 41, 42]
    assert out.prompt_logprobs[0] is None
    assert [(p.token_id, p.logprob) for p in out.prompt_logprobs[1:]] == [(40, -1.5), (41, -0.25), (42, -2.0)]
    assert len(out.prompt_logprobs) == len(out.prompt_ids)


def test_top_k_is_keyed_by_id_best_first_and_cut_at_k() -> None:
    answer = text_answer()
    # an answer whose row is out of order still comes back best first
    answer["meta_info"]["input_top_logprobs"][1].reverse()
    out = parse_generate(request(), "sglang", answer, K)
    assert out.prompt_logprobs[1].top == [(40, -1.5), (7, -1.6), (9, -3.0)]
    assert out.prompt_logprobs[3].top == [(2, -0.5), (42, -2.0), (3, -2.2)]  # the actual token need not be first
    assert out.output_logprobs[1] == TokenLogprobs(51, -0.3, [(51, -0.3), (50, -1.5), (55, -3.5)])
    assert out.output_ids == [50, 51] and out.output_text == "a cat"


def test_image_placeholders_take_the_logprob_of_the_image_token_not_of_the_pad_value() -> None:
    out = parse_generate(request(), "sglang", image_answer({2: -0.01, 3: -0.02}), K)
    assert out.prompt_ids == [1, 5, IMAGE, IMAGE, 7, 40]
    assert [p.token_id for p in out.prompt_logprobs[1:]] == [5, IMAGE, IMAGE, 7, 40]
    assert out.prompt_logprobs[2].logprob == -0.01 and out.prompt_logprobs[3].logprob == -0.02
    assert out.prompt_logprobs[4].logprob == -1.0  # text positions keep SGLang's own value


def test_image_placeholder_found_only_in_the_top_k_uses_it() -> None:
    answer = image_answer(None)
    answer["meta_info"]["input_top_logprobs"][3] = entries([-0.3, -0.5, -1.5], [IMAGE, 3, 4])
    out = parse_generate(request(), "sglang", answer, K)
    assert out.prompt_logprobs[2].logprob == -0.01 and out.prompt_logprobs[3].logprob == -0.3


def test_image_placeholder_with_no_logprob_of_its_own_is_an_error_not_a_substitute() -> None:
    with pytest.raises(ValueError, match="pad values"):
        parse_generate(request(), "sglang", image_answer(None), K)


@pytest.mark.parametrize("break_it, message", [
    (lambda a: a.pop("meta_info"), "meta_info"),
    (lambda a: a.pop("prompt_token_ids"), "prompt_token_ids"),
    (lambda a: a.update(output_ids="oops"), "output_ids"),
    (lambda a: a["meta_info"]["input_token_logprobs"].pop(), "input_token_logprobs has 3 entries for 4"),
    (lambda a: a["meta_info"]["input_top_logprobs"].pop(), "input_top_logprobs has 3 entries"),
    (lambda a: a["meta_info"].pop("output_top_logprobs"), "output_top_logprobs"),
    (lambda a: a["meta_info"]["input_token_logprobs"].__setitem__(0, [-1.0, 1, None]), "not scored from position 0"),
    (lambda a: a["meta_info"]["input_token_logprobs"].__setitem__(2, [-1.0, 41]), "entry"),
    (lambda a: a["meta_info"]["input_token_logprobs"].__setitem__(2, [None, 41, None]), "no logprob"),
    (lambda a: a["meta_info"]["input_token_logprobs"].__setitem__(2, ["x", 41, None]), "not a number"),
    (lambda a: a["meta_info"]["output_token_logprobs"].__setitem__(1, [-0.3, 99, None]), "output token 1 is 51"),
    (lambda a: a["meta_info"].update(finish_reason={"type": "abort", "message": "too long"}), "aborted.*too long"),
])
def test_malformed_answers_raise_value_error(break_it: Any, message: str) -> None:
    answer = text_answer()
    break_it(answer)
    with pytest.raises(ValueError, match=message):
        parse_generate(request(), "sglang", answer, K)


def test_without_top_k_the_answer_has_no_top_rows() -> None:
    answer = text_answer()
    for key in ("input_top_logprobs", "output_top_logprobs"):  # absent when top_logprobs_num is 0 (tokenizer_manager.py l.2873)
        answer["meta_info"].pop(key)
    out = parse_generate(request(), "sglang", answer, 0)
    assert out.prompt_logprobs[1] == TokenLogprobs(40, -1.5, []) and out.output_logprobs[0].top == []


# --- sglang-server: POST /generate ---


def server(**kw: Any) -> SGLangServerEngine:
    engine = SGLangServerEngine(settings(**kw))
    engine._image_token, engine._image_token_read = IMAGE, True
    return engine


def data_url_bytes(url: str) -> bytes:
    header, _, data = url.partition(",")
    assert header.endswith(";base64")
    return base64.b64decode(data)


def test_generate_payload_is_sglangs_generate_request() -> None:
    path, body = server().payload(request())
    assert path == "/generate"
    assert set(body) <= GENERATE_KEYS and set(body["sampling_params"]) <= SAMPLING_KEYS
    assert body["text"] == request().prompt_text
    assert body["return_logprob"] is True and body["logprob_start_len"] == 0 and body["top_logprobs_num"] == K
    assert body["return_prompt_token_ids"] is True and body["token_ids_logprob"] == [IMAGE]
    assert body["sampling_params"] == {"max_new_tokens": 16, "ignore_eos": True, "temperature": 0.0}
    (url,) = body["image_data"]  # pixels: a lossless PNG of the harness's decode
    assert url.startswith("data:image/png;base64,")
    decoded = np.asarray(Image.open(io.BytesIO(data_url_bytes(url))))
    assert np.array_equal(decoded, np.asarray(Image.open(PNG).convert("RGB")))


def test_generate_payload_bytes_input_sends_the_original_file_and_sampling_fields() -> None:
    req = request(images=(JPEG, PNG), image_input="bytes", sampling=Sampling(0.8, 0.9, 1234), max_new_tokens=4)
    _, body = server().payload(req)
    assert [data_url_bytes(u) for u in body["image_data"]] == [Path(JPEG).read_bytes(), Path(PNG).read_bytes()]
    assert body["image_data"][0].startswith("data:image/jpeg;base64,")
    assert body["sampling_params"] == {"max_new_tokens": 4, "ignore_eos": True, "temperature": 0.8, "top_p": 0.9,
                                       "sampling_seed": 1234}


def test_generate_payload_text_only_and_model_without_image_token() -> None:
    engine = server()
    engine._image_token = None
    _, body = engine.payload(request(images=(), prompt_text="Hi"))
    assert "image_data" not in body and "token_ids_logprob" not in body


def test_generate_rejects_the_native_form() -> None:
    with pytest.raises(ValueError, match="native form"):
        server().payload(request(prompt_form="native"))


def test_generate_answer_parses_through_http_and_a_malformed_one_is_that_cases_error() -> None:
    answers = {"good": text_answer(), "bad": {"text": "x", "meta_info": {}}}

    def handler(http_request: httpx.Request) -> httpx.Response:
        body = json.loads(http_request.content)
        assert http_request.url.path == "/generate"
        return httpx.Response(200, json=answers["good" if body["text"] == "good" else "bad"])

    engine = server()
    engine.client = httpx.Client(transport=httpx.MockTransport(handler))
    engine.url = "http://sglang"
    good, bad = engine._one(request(prompt_text="good", images=())), engine._one(request(prompt_text="bad", images=()))
    assert good.error is None and good.prompt_ids == [1, 40, 41, 42] and "request_s" in good.timings
    assert bad.error and bad.error.startswith("ValueError") and bad.case_id == "c1"


def test_server_command_launches_sglang_on_loopback_with_the_feature_flags() -> None:
    s = settings(dtype="bfloat16", device="cuda", seed=7,
                 features={"prefill_chunk_tokens": 64, "prefix_caching": False},
                 options={"mem_fraction_static": 0.5, "enable_deterministic_inference": True})
    command, env = SGLangServerEngine(s).server_command(30123)
    assert command[1:3] == ["-m", "sglang.launch_server"]
    pairs = {command[i]: command[i + 1] for i in range(3, len(command) - 1) if not command[i + 1].startswith("--")}
    assert pairs["--model-path"] == "/models/tiny" and pairs["--host"] == "127.0.0.1" and pairs["--port"] == "30123"
    assert pairs["--dtype"] == "bfloat16" and pairs["--random-seed"] == "7" and pairs["--device"] == "cuda"
    assert pairs["--chunked-prefill-size"] == "64" and pairs["--sampling-defaults"] == "openai"
    assert pairs["--cuda-graph-backend-decode"] == pairs["--cuda-graph-backend-prefill"] == "disabled"
    assert pairs["--mem-fraction-static"] == "0.5"
    assert "--disable-radix-cache" in command and "--enable-deterministic-inference" in command
    assert env["SGLANG_RETURN_ORIGINAL_LOGPROB"] == "1"


def test_features_translate_to_sglang_server_args() -> None:
    assert engine_args(settings(features={"prefix_caching": True}), "sglang")["disable_radix_cache"] is False
    graphs = engine_args(settings(features={"compiled": True}), "sglang")  # captured graphs as SGLang defaults them
    assert "cuda_graph_backend_decode" not in graphs and "cuda_graph_backend_prefill" not in graphs
    for eager in (engine_args(settings(features={"compiled": False}), "sglang"), engine_args(settings(), "sglang")):
        assert eager["cuda_graph_backend_decode"] == eager["cuda_graph_backend_prefill"] == "disabled"
    assert "served_model" not in engine_args(settings(options={"served_model": "m"}), "sglang")
    with pytest.raises(ValueError, match="engine 'sglang' does not support the feature 'cache_block_tokens'"):
        engine_args(settings(features={"cache_block_tokens": 32}), "sglang")
    assert SGLangEngine.capabilities.features == {"prefill_chunk_tokens", "prefix_caching", "compiled"}
    assert SGLangServerEngine.capabilities.features == frozenset()  # an attached server's flags are not ours


def test_the_compiled_variant_runs_on_sglang_with_captured_graphs() -> None:
    """The `compiled` variant of variants.yaml is planned on SGLang (not skipped) and starts it with graphs."""
    variants = load_variants([])
    compiled = variants.get("compiled")
    capabilities = SGLangEngine.capabilities
    assert engine_skip_reason(compiled, capabilities, "sglang", "cuda") is None
    features, _ = base_features(variants.engine, capabilities)
    args = engine_args(engine_settings(compiled, settings(features=features)), "sglang")
    assert "cuda_graph_backend_decode" not in args and "cuda_graph_backend_prefill" not in args
    assert engine_args(settings(features=features), "sglang")["cuda_graph_backend_decode"] == "disabled"  # base: eager


# --- sglang-chat: POST /v1/chat/completions ---


def chat_request(**kw: Any) -> Request:
    messages = ({"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is this?"}]},)
    return request(prompt_form="native", image_input="bytes", images=(JPEG,), messages=messages, **kw)


def test_chat_payload_asks_for_ids_and_meta_info() -> None:
    path, body = SGLangChatEngine(settings()).payload(chat_request())
    assert path == "/v1/chat/completions" and set(body) <= CHAT_KEYS
    assert body["messages"][0]["content"][0]["image_url"]["url"].startswith("data:image/jpeg;base64,")
    assert body["messages"][0]["content"][1] == {"type": "text", "text": "What is this?"}
    assert body["logprobs"] is True and body["top_logprobs"] == K and body["ignore_eos"] is True
    assert body["return_prompt_token_ids"] and body["return_token_ids"] and body["return_meta_info"]
    assert body["temperature"] == 0.0 and body["max_completion_tokens"] == 16 and "seed" not in body
    assert (body["top_k"], body["min_p"], body["repetition_penalty"]) == (-1, 0.0, 1.0)
    _, sampled = SGLangChatEngine(settings()).payload(chat_request(sampling=Sampling(0.8, 0.9, 5)))
    assert (sampled["temperature"], sampled["top_p"], sampled["seed"]) == (0.8, 0.9, 5)


def chat_answer() -> dict[str, Any]:
    """ChatCompletionResponse (protocol.py l.1307-1351) as serving_chat.py l.2975-3017 fills it: meta_info is
    the generate meta_info with logprob_start_len=-1 (l.1373) and text in its entries (l.1378)."""
    meta = text_answer()["meta_info"]
    meta["input_token_logprobs"] = [[None, 42, "c"]]
    meta.pop("input_top_logprobs")
    meta["output_token_logprobs"] = entries([-0.1, -0.3], [50, 51], ["a", " cat"])
    meta["output_top_logprobs"] = [entries([-0.1, -2.5, -3.0], [50, 52, 53], ["a", "b", "c"]),
                                   entries([-0.3, -1.5, -3.5], [51, 50, 55], [" cat", "a", "d"])]
    return {"id": "rid-1", "object": "chat.completion", "created": 0, "model": "/models/tiny",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "a cat", "reasoning_content": None,
                                                 "tool_calls": None},
                         "logprobs": {"content": [{"token": "a", "bytes": [97], "logprob": -0.1, "top_logprobs": []},
                                                  {"token": " cat", "bytes": [32, 99, 97, 116], "logprob": -0.3,
                                                   "top_logprobs": []}]},
                         "finish_reason": "length", "matched_stop": None, "prompt_token_ids": [1, 40, 41, 42],
                         "response_token_ids": [50, 51], "meta_info": meta}],
            "usage": {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6}, "metadata": None}


def test_chat_answer_gives_ids_and_output_logprobs_and_no_prompt_logprobs() -> None:
    engine = SGLangChatEngine(settings())
    out = engine.parse(chat_request(), chat_answer())
    assert out.prompt_ids == [1, 40, 41, 42] and out.prompt_logprobs == []
    assert out.output_ids == [50, 51] and out.output_text == "a cat"
    assert out.output_logprobs[1] == TokenLogprobs(51, -0.3, [(51, -0.3), (50, -1.5), (55, -3.5)])


def test_chat_prompt_metrics_are_unavailable_never_zero() -> None:
    caps = SGLangChatEngine.capabilities
    assert caps.unavailable() == {"prompt_logprobs": "the engine does not return prompt logprobs"}
    assert caps.prompt_forms == {"native"}
    engine = SGLangChatEngine(settings()).parse(chat_request(), chat_answer())
    reference = EngineOutput("c1", "hf", prompt_ids=[1, 40, 41, 42],
                             prompt_logprobs=[None] + [TokenLogprobs(t, -1.0) for t in (40, 41, 42)],
                             output_ids=[50, 51], output_logprobs=[TokenLogprobs(50, -0.1), TokenLogprobs(51, -0.3)],
                             output_text="a cat")
    cmp = compare_outputs(reference, engine, IMAGE, caps.unavailable())
    assert cmp.prompt_ids_match is True and cmp.prefill_max is None and "prefill_max" in cmp.unavailable
    assert cmp.missing == [] and cmp.decode_max == 0.0


@pytest.mark.parametrize("break_it, error", [
    (lambda a: a["choices"][0].pop("meta_info"), ValueError),
    (lambda a: a["choices"][0].pop("response_token_ids"), ValueError),
    (lambda a: a["choices"][0].update(prompt_token_ids=None), ValueError),
    (lambda a: a["choices"][0].update(finish_reason="abort"), ValueError),
    (lambda a: a["choices"][0]["meta_info"]["output_token_logprobs"].pop(), ValueError),
    (lambda a: a.update(choices=[]), IndexError),
])
def test_malformed_chat_answers_raise(break_it: Any, error: type[Exception]) -> None:
    answer = chat_answer()
    break_it(answer)
    with pytest.raises(error):
        SGLangChatEngine(settings()).parse(chat_request(), answer)


def test_chat_server_command_names_the_served_model() -> None:
    command, _ = SGLangChatEngine(settings(options={"served_model": "tiny"})).server_command(1)
    assert command[-2:] == ["--served-model-name", "tiny"] and "--served-model" not in command


# --- the offline Engine, with a stand-in for the sglang modules it imports ---


class FakeTokenizerManager:
    """Answers a batch GenerateReqInput as `_handle_batch_request` does (tokenizer_manager.py l.2074-2192):
    one list of answers, in request order."""

    def __init__(self, fail_batches: bool = False) -> None:
        self.calls: list[dict[str, Any]] = []
        self.fail_batches = fail_batches

    def generate_request(self, obj: Any, request: Any) -> Any:
        self.calls.append(dict(obj.fields))

        async def gen() -> Any:
            if self.fail_batches and len(obj.fields["text"]) > 1:
                raise ValueError("batch failed")
            answers = []
            for text in obj.fields["text"]:
                if text == "bad":
                    raise ValueError("bad request")
                answers.append(text_answer())
            yield answers

        return gen()


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> Any:
    """An SGLangEngine built around stand-ins for `sglang` and its `GenerateReqInput`."""
    import asyncio

    class GenerateReqInput:  # io_struct.py l.176: a dataclass of keyword fields
        def __init__(self, **fields: Any) -> None:
            self.fields = fields

    io_struct = types.ModuleType("sglang.srt.managers.io_struct")
    io_struct.GenerateReqInput = GenerateReqInput
    for name in ("sglang", "sglang.srt", "sglang.srt.managers"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setitem(sys.modules, "sglang.srt.managers.io_struct", io_struct)
    started: dict[str, Any] = {}

    class Engine:
        def __init__(self, **kwargs: Any) -> None:
            started.update(kwargs)
            self.tokenizer_manager = FakeTokenizerManager()
            self.loop = asyncio.new_event_loop()

        def shutdown(self) -> None:
            self.loop.close()

    sys.modules["sglang"].Engine = Engine
    monkeypatch.setattr("harness.engines.sglang_offline.image_token", lambda model: IMAGE)
    engine = SGLangEngine(settings(features={"prefill_chunk_tokens": 32}))
    engine.start([])
    engine.started = started
    yield engine
    engine.close()


def test_offline_start_passes_server_args(offline: Any) -> None:
    assert offline.started["model_path"] == "/models/tiny" and offline.started["chunked_prefill_size"] == 32
    assert offline.started["dtype"] == "float32" and offline.started["random_seed"] == 0


def test_offline_run_sends_the_submission_in_one_call(offline: Any) -> None:
    requests = [request(case_id="a"), request(case_id="b", images=(), prompt_text="Hi"),
                request(case_id="c", images=(JPEG,), image_input="bytes", sampling=Sampling(0.8, 0.9, 3))]
    outputs = list(offline.run(requests))
    (call,) = offline.engine.tokenizer_manager.calls
    assert call["text"] == [r.prompt_text for r in requests]
    pixels, none, file_bytes = call["image_data"]
    assert isinstance(pixels[0], Image.Image) and none == [] and file_bytes == [Path(JPEG).read_bytes()]
    assert call["sampling_params"][0] == {"max_new_tokens": 16, "ignore_eos": True, "temperature": 0.0}
    assert call["sampling_params"][2]["sampling_seed"] == 3
    assert (call["return_logprob"], call["logprob_start_len"], call["top_logprobs_num"]) == (True, 0, K)
    assert call["return_prompt_token_ids"] is True and call["token_ids_logprob"] == [IMAGE]
    assert [o.case_id for o in outputs] == ["a", "b", "c"] and all(o.error is None for o in outputs)
    assert outputs[0].prompt_logprobs[1] == TokenLogprobs(40, -1.5, [(40, -1.5), (7, -1.6), (9, -3.0)])
    assert "batch_s" in outputs[0].timings


def test_offline_batch_failure_retries_each_request(offline: Any) -> None:
    outputs = {o.case_id: o for o in offline.run([request(case_id="a"), request(case_id="b", prompt_text="bad"),
                                                  request(case_id="n", prompt_form="native")])}
    assert outputs["a"].error is None and "request_s" in outputs["a"].timings
    assert outputs["b"].error == "ValueError: bad request"
    assert "no chat API" in outputs["n"].error
    assert [len(c["text"]) for c in offline.engine.tokenizer_manager.calls] == [2, 1, 1]


def test_offline_unreadable_image_is_that_cases_error(offline: Any, tmp_path: Path) -> None:
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    outputs = {o.case_id: o for o in offline.run([request(case_id="a"), request(case_id="x", images=(str(broken),))])}
    assert outputs["a"].error is None and outputs["x"].error


# --- version and SGLang's image loader ---


def test_version_is_none_without_sglang_and_adapters_resolve() -> None:
    if importlib.util.find_spec("sglang") is None:
        assert SGLangEngine.version() is None
    assert resolve_engine("sglang") is SGLangEngine
    assert resolve_engine("sglang-server") is SGLangServerEngine and resolve_engine("sglang-chat") is SGLangChatEngine
    assert SGLangServerEngine.version() == SGLangChatEngine.version() == SGLangEngine.version()


def test_image_loader_calls_sglangs_load_image(monkeypatch: pytest.MonkeyPatch) -> None:
    torch = pytest.importorskip("torch")
    calls = []

    def load_image(image_file: Any, gpu_image_decode: Any = True) -> Any:
        """srt/utils/common.py l.2143-2182: (PIL image, size) or, nvJPEG, (CHW uint8 CUDA tensor, None)."""
        calls.append((image_file, gpu_image_decode))
        image = Image.open(io.BytesIO(data_url_bytes(image_file)))
        if gpu_image_decode:
            return torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1).contiguous(), None
        return image, (image.width, image.height)

    utils = types.ModuleType("sglang.srt.utils")
    utils.load_image = load_image
    for name in ("sglang", "sglang.srt"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setitem(sys.modules, "sglang.srt.utils", utils)
    gray = str(CASES / "images" / "camera_gray.jpg")
    pil = SGLangEngine.image_loader(False)(gray)
    assert isinstance(pil, Image.Image) and pil.mode == "RGB"
    tensor = SGLangChatEngine.image_loader()(gray)
    assert isinstance(tensor, np.ndarray) and tensor.shape == (*Image.open(gray).size[::-1], 3)
    assert [(data_url_bytes(url), gpu) for url, gpu in calls] == [(Path(gray).read_bytes(), False),
                                                                  (Path(gray).read_bytes(), True)]
    assert calls[0][0].startswith("data:image/jpeg;base64,")


def test_image_loader_without_sglang_is_an_unavailable_decoder_not_a_crash() -> None:
    from harness.decode_diff import register_engine_loader
    from harness.inputs.decode.registry import DECODERS, availability

    name = register_engine_loader("sglang")
    try:
        assert name == "sglang-loader"
        if importlib.util.find_spec("sglang") is None:
            state = availability(name)
            assert not state.available and "sglang" in state.reason
    finally:  # the registry is global: leave it as other tests expect it
        DECODERS.pop(name, None)
        availability.cache_clear()


# --- the real engine, where SGLang runs ---


def _sglang_with_cuda() -> str | None:
    """Why the real-engine tests cannot run here, or None."""
    if importlib.util.find_spec("sglang") is None:
        return "sglang is not installed (it has no CPU build on PyPI: see docs/vllm-cpu.md)"
    try:
        import sglang  # noqa: F401
        import torch
    except Exception as exc:  # a broken install is a reason to skip, shown as such
        return f"import sglang failed: {type(exc).__name__}: {exc}"
    if not torch.cuda.is_available():
        return "SGLang needs a CUDA GPU and torch sees none"
    return None


REAL_SKIP = _sglang_with_cuda()


@pytest.mark.engine
@pytest.mark.skipif(REAL_SKIP is not None, reason=REAL_SKIP or "")
@pytest.mark.parametrize("engine", ["sglang", "sglang-server"])
def test_real_sglang_passes_two_cases(tmp_path: Path, tiny_model: str, engine: str) -> None:
    from harness.judging.explain import case_lines
    from harness.runner import RunConfig, execute

    run = execute(RunConfig(cases=[CASES], out=tmp_path / "out", engine=engine, model=tiny_model,
                            device="cuda", variants=["base"], only={"text-only", "tiny-png"}),
                  progress=lambda _: None)
    assert run.status == "complete" and len(run.cases) == 2
    assert [c.verdict for c in run.cases] == ["pass", "pass"], [case_lines(c) for c in run.cases]
    image_case = run.case("tiny-png")
    assert image_case.comparison.image_positions > 0 and image_case.comparison.prompt_ids_match


@pytest.mark.engine
@pytest.mark.skipif(REAL_SKIP is not None, reason=REAL_SKIP or "")
def test_real_sglang_image_loader_decodes_like_pil_on_png() -> None:
    loaded = SGLangEngine.image_loader()(PNG)
    assert np.array_equal(np.asarray(loaded), np.asarray(Image.open(PNG).convert("RGB")))



def test_penalties_reach_every_sglang_payload_by_its_own_names() -> None:
    penalties = Penalties(presence=1.0, frequency=0.5, repetition=1.3)
    wanted = {"presence_penalty": 1.0, "frequency_penalty": 0.5, "repetition_penalty": 1.3}
    _, generate = server().payload(request(penalties=penalties))
    assert set(generate["sampling_params"]) <= SAMPLING_KEYS and wanted.items() <= generate["sampling_params"].items()
    _, chat = SGLangChatEngine(settings()).payload(chat_request(penalties=penalties))
    assert set(chat) <= CHAT_KEYS and wanted.items() <= chat.items()
    assert all("penalties" in e.capabilities.request_fields for e in (SGLangEngine, SGLangServerEngine,
                                                                   SGLangChatEngine))
