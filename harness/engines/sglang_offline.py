"""SGLang's offline `sglang.Engine`: started once per run, all cases submitted together.

Read from SGLang 0.5.23 as published on PyPI (the wheel's `sglang/_version.py`
records no commit id; the semantics below were cross-checked against
sgl-project/sglang@17b671636231165f1254e5362e2b418029c93b35, whose
`logprob_result_processor.py` has the same alignment and clipping). Paths
are under `python/sglang/` of the repository; line numbers are the wheel's.

Request (`srt/managers/io_struct.py` GenerateReqInput, l.177-337):
- `text` (l.185): the harness's rendered prompt, one per case (a list: one batch);
- `image_data` (l.200): per case a list of images (list of lists, l.645-684; the
  first entry must itself be a list, so a case without images gets `[]`): PIL
  images of the harness's decode (`pixels`) or the original file bytes
  (`bytes`, decoded by SGLang's `load_image`, see `image_loader`);
- `sampling_params` (l.227; fields in `srt/sampling/sampling_params.py` l.149-181):
  `max_new_tokens`, `ignore_eos`, `temperature` 0 (greedy: SGLang turns it into
  top_k=1, l.245-248) or the request's `temperature`/`top_p`/`sampling_seed`;
- `return_logprob` (l.230), `logprob_start_len=0` (l.233, default -1 = output
  only), `top_logprobs_num=k` (l.235), `token_ids_logprob=[image token id]`
  (l.237, see below) and `return_prompt_token_ids=True` (l.337).

`Engine.generate` (`srt/entrypoints/engine.py` l.433-543) has no
`return_prompt_token_ids` argument, so `_generate` builds the GenerateReqInput
itself and runs it exactly as `Engine.generate` does (l.495, l.528, l.542:
`tokenizer_manager.generate_request(obj, None)` on `Engine.loop`).

Response (`srt/managers/tokenizer_manager.py` l.2667-2674; the HTTP contract is
`api/v1/api_types.py` GenerateResponse l.408 and GenerateMetaInfo l.357): a dict
per case with `text`, `output_ids`, `prompt_token_ids` and `meta_info`, whose
logprob entries are `[logprob, token_id, text]` (LogprobEntry l.340; built by
`detokenize_logprob_tokens`, tokenizer_manager.py l.3098, text None unless
`return_text_in_logprobs`). `input_token_logprobs[i]` scores prompt token i
given the tokens before it and position 0 is None; `input_top_logprobs[0]` is
None (`srt/managers/scheduler_components/logprob_result_processor.py` l.38 and
l.66-81: a None is prepended and the last row popped). Top-k rows come from
`torch.topk`, best first (`srt/layers/logprob_processor.py` l.106).

What SGLang does not give back as is: the token ids in `input_token_logprobs`
are the scheduler's `origin_input_ids`, in which every multimodal placeholder
has been replaced by a 62-bit pad value (`srt/managers/scheduler.py` l.3219-3225,
`srt/managers/schedule_batch.py` set_identity l.422); the returned id is
clipped to 0 (logprob_result_processor.py l.51-54) and the logprob is that of
token `vocab_size - 1` (the clamp at schedule_batch.py l.3052-3054). So the
prompt ids come from `prompt_token_ids` (the processor's expanded ids before
padding: tokenizer_manager.py l.1226, l.2094), and at a position whose
returned id is not the prompt's the logprob of the real token is read from
`input_token_ids_logprobs` (asked for with `token_ids_logprob=[image token
id]`; same alignment, l.114-147) or the top-k; a position where neither has
it is this case's error, never a silent substitute.

Engine options (`ServerArgs` fields, `srt/arg_groups/fields/`): `dtype`
(model.py l.160), `random_seed` (device.py l.47), `device` (device.py l.24),
`sampling_defaults="openai"` (serving.py l.232: never the checkpoint's
generation_config), and the engine-neutral features: `prefill_chunk_tokens` ->
`chunked_prefill_size` (schedule.py l.52), `prefix_caching` ->
`disable_radix_cache` (memory.py l.64), `compiled` -> captured graphs as
SGLang defaults them (decode `full`, prefill `breakable`,
`srt/model_executor/cuda_graph_config.py` l.119-153) or both phases
`cuda_graph_backend_{decode,prefill}="disabled"` (exec_.py l.613-628; the
legacy `disable_cuda_graph` is `no_cli`, exec_.py l.670). Like the vLLM
adapter's eager default, graphs are off unless the variant asks for them.
Speculative decoding is not mapped: SGLang's NGRAM drafter is a trie/BFS
tree (`speculative_ngram_*`, spec.py l.250-282) with no equivalent of a
prompt-lookup `num_speculative_tokens`/`prompt_lookup_max`. With
`return_logprob` and `logprob_start_len=0` the radix cache never reuses a
prefix (schedule_batch.py l.1774-1775): a repeated request still hits the
multimodal caches, not the prefix cache. SGLang's offline Engine has no chat
API, so the native prompt form is the `sglang-chat` adapter's.
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from harness.core.schema import EngineOutput, TokenLogprobs
from harness.engines.base import Capabilities, Engine, EngineSettings, Request
from harness.engines.features import mapped
from harness.engines.messages import image_url_of, penalty_fields
from harness.inputs.decode import decode_all

# SGLANG_RETURN_ORIGINAL_LOGPROB (srt/environ.py l.1508, srt/layers/sampler.py l.82,
# l.192, l.322): output logprobs of the model's distribution, not temperature-scaled
# (greedy batches are unscaled either way). The hub is never reached.
SGLANG_ENV = {"SGLANG_RETURN_ORIGINAL_LOGPROB": "1", "HF_HUB_OFFLINE": "1"}

# Both CUDA graph phases off (exec_.py l.613-628): the eager default of the base variant.
EAGER = {"cuda_graph_backend_decode": "disabled", "cuda_graph_backend_prefill": "disabled"}

# Each engine feature it takes (harness.engines.features) as `ServerArgs` fields. `compiled`: the captured
# graphs as SGLang defaults them (decode `full`, prefill `breakable`, the piecewise graphs) or none.
FEATURE_ARGS: dict[str, Callable[[Any], dict[str, Any]]] = {
    "prefill_chunk_tokens": lambda tokens: {"chunked_prefill_size": int(tokens)},
    "prefix_caching": lambda on: {"disable_radix_cache": not on},
    "compiled": lambda on: {} if on else dict(EAGER),
}
# What an absent feature stands for: like the vLLM adapter, eager unless a variant asks for graphs.
DEFAULT_FEATURES = {"compiled": False}


def engine_args(settings: EngineSettings, engine: str) -> dict[str, Any]:
    """`ServerArgs` fields for `sglang.Engine(**args)` and, as `--flags`, for `sglang.launch_server` (`engine`:
    the adapter's name, for the error on a feature it does not map)."""
    options = {k: v for k, v in settings.options.items() if k != "served_model"}  # the chat adapters' name
    return {"dtype": settings.dtype, "random_seed": settings.seed, "device": settings.device,
            "sampling_defaults": "openai", **mapped(FEATURE_ARGS, {**DEFAULT_FEATURES, **settings.features}, engine),
            **options}


def sampling_params(request: Request) -> dict[str, Any]:
    """SGLang sampling params (sampling_params.py l.149-181): greedy is temperature 0, EOS ignored.

    `sampling_seed` is honoured only under `enable_deterministic_inference`
    (srt/sampling/sampling_batch_info.py l.157-170); otherwise SGLang samples
    from its global generator seeded by `random_seed`.
    """
    params: dict[str, Any] = {"max_new_tokens": request.max_new_tokens, "ignore_eos": True}
    if request.sampling is None:
        params["temperature"] = 0.0
    else:
        params.update(temperature=request.sampling.temperature, top_p=request.sampling.top_p,
                      sampling_seed=request.sampling.seed,
                      **({"top_k": request.sampling.top_k} if request.sampling.top_k else {}))
    return params | penalty_fields(request)


def image_token(model: str) -> int | None:
    """The checkpoint's image placeholder id, for `token_ids_logprob`; None when it names none."""
    from harness.inputs.models import image_token_id

    try:
        return image_token_id(model)
    except (OSError, ValueError):
        return None


def load_with_sglang(gpu_image_decode: bool | str = True) -> Callable[[str | Path], Any]:
    """A path -> image function that decodes with SGLang's own `load_image`.

    `load_image(image_file, gpu_image_decode)` (srt/utils/common.py l.2143,
    re-exported by `sglang.srt.utils`) returns (image, size): for a JPEG, with
    CUDA and `gpu_image_decode` true, a CHW uint8 CUDA tensor from
    `torchvision.io.decode_jpeg(device="cuda")` (nvJPEG, default nearest chroma
    upsampling; l.2094-2130, `is_jpeg_with_cuda` l.2069), with
    `"nvjpeg_fancy"` nvImageCodec with fancy upsampling
    (srt/utils/nvjpeg_decoder.py); otherwise a PIL image. The switch is not a
    server flag: it is the class attribute `gpu_image_decode` of each
    multimodal processor (srt/multimodal/processors/base_processor.py l.243,
    True by default, so Qwen2-VL decodes JPEGs on the GPU; False for LLaVA,
    LFM2-VL, MiniCPM, InternVL, Pixtral...; "nvjpeg_fancy" for Kimi-K3), and
    the processor converts a PIL result with `convert("RGB")` (base_processor.py
    l.1032-1043; only GLM-4V sets `smart_rgb_conversion`, which composites alpha
    onto a background, common.py l.2030).
    The file goes in as the data URL the chat path receives (`image_url_of`;
    `get_image_bytes` base64-decodes it, l.2195-2197). Returns a PIL RGB
    image or an HWC uint8 array. sglang is imported at the first call, so a
    machine without it gets an unavailable decoder, not a crash.
    """

    def load(path: str | Path) -> Any:
        from PIL import Image
        from sglang.srt.utils import load_image

        image, _ = load_image(image_url_of(Path(path)), gpu_image_decode)
        if isinstance(image, Image.Image):
            return image if image.mode == "RGB" else image.convert("RGB")
        return image.permute(1, 2, 0).cpu().numpy()  # nvJPEG: CHW uint8 on the GPU

    return load


class SGLangEngine(Engine):
    name = "sglang"
    capabilities = Capabilities(max_top_k=20, prompt_forms=frozenset({"rendered"}),
                                image_inputs=frozenset({"pixels", "bytes"}),
                                features=frozenset(FEATURE_ARGS), request_fields=frozenset({"penalties"}))

    @classmethod
    def version(cls) -> str | None:
        try:
            return metadata.version("sglang")
        except metadata.PackageNotFoundError:
            return None

    @classmethod
    def image_loader(cls, gpu_image_decode: bool | str = True) -> Callable[[str | Path], Any]:
        """SGLang's image decode path for `decode-diff` (see `load_with_sglang`)."""
        return load_with_sglang(gpu_image_decode)

    def __init__(self, settings: EngineSettings) -> None:
        super().__init__(settings)
        for key, value in SGLANG_ENV.items():
            os.environ.setdefault(key, value)
        import sglang

        self._sglang = sglang
        self.engine: Any = None
        self.image_token: int | None = None

    def info(self) -> dict[str, Any]:
        import torch
        import transformers

        return {**super().info(), "engine_version": self.version(), "transformers": transformers.__version__,
                "torch": torch.__version__}

    def start(self, requests: Sequence[Request]) -> None:
        self.image_token = image_token(self.settings.model)
        self.engine = self._sglang.Engine(model_path=self.settings.model, **engine_args(self.settings, self.name))

    def close(self) -> None:
        if self.engine is not None:
            self.engine.shutdown()
            self.engine = None

    def run(self, requests: Sequence[Request]) -> Iterator[EngineOutput]:
        """One `generate` call for the whole submission; if it raises, one call per request, so a
        single bad request becomes that case's error, not the submission's."""
        prompts: list[tuple[Request, list[Any]]] = []
        for request in requests:
            try:
                if request.prompt_form != "rendered":
                    raise ValueError("SGLang's offline Engine has no chat API: the native form is sglang-chat's")
                prompts.append((request, self._images(request)))
            except Exception as exc:  # unreadable image: this case's error only
                yield EngineOutput.failed(request.case_id, self.name, f"{type(exc).__name__}: {exc}",
                                          request.variant)
        if not prompts:
            return
        start = time.perf_counter()
        try:
            results = self._generate(prompts)
        except Exception:
            for prompt in prompts:
                start = time.perf_counter()
                try:
                    result = self._generate([prompt])[0]
                except Exception as exc:
                    yield EngineOutput.failed(prompt[0].case_id, self.name, f"{type(exc).__name__}: {exc}",
                                              prompt[0].variant)
                    continue
                yield self._output(prompt[0], result, {"request_s": time.perf_counter() - start})
            return
        batch_s = time.perf_counter() - start
        for (request, _), result in zip(prompts, results):
            yield self._output(request, result, {"batch_s": batch_s})

    def _images(self, request: Request) -> list[Any]:
        if request.image_input == "bytes":
            return [Path(p).read_bytes() for p in request.images]
        return decode_all(request.images, request.decoder)

    def _generate(self, prompts: list[tuple[Request, list[Any]]]) -> list[dict[str, Any]]:
        """`Engine.generate`'s own path (engine.py l.495-542) with `return_prompt_token_ids`, which
        `Engine.generate` does not pass through. A list of prompts is one batch; the answer is a list."""
        from sglang.srt.managers.io_struct import GenerateReqInput

        fields = {**generate_fields(self.settings.top_k, self.image_token),
                  "text": [r.prompt_text for r, _ in prompts],
                  "sampling_params": [sampling_params(r) for r, _ in prompts]}
        if any(images for _, images in prompts):
            fields["image_data"] = [images for _, images in prompts]
        obj = GenerateReqInput(**fields)
        generator = self.engine.tokenizer_manager.generate_request(obj, None)
        return list(self.engine.loop.run_until_complete(generator.__anext__()))

    def _output(self, request: Request, result: dict[str, Any], timings: dict[str, float]) -> EngineOutput:
        try:
            output = parse_generate(request, self.name, result, self.settings.top_k)
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            return EngineOutput.failed(request.case_id, self.name, f"{type(exc).__name__}: {exc}", request.variant)
        output.timings = timings
        return output


def generate_fields(k: int, image_token_id: int | None) -> dict[str, Any]:
    """The logprob fields of a generate request: every prompt position with its top-k, the prompt
    ids, and the image token's logprob at every position (for the pad-replaced placeholders)."""
    fields: dict[str, Any] = {"return_logprob": True, "logprob_start_len": 0, "top_logprobs_num": k,
                              "return_prompt_token_ids": True}
    if image_token_id is not None:
        fields["token_ids_logprob"] = [image_token_id]  # flat: copied to every request of a batch (l.814)
    return fields


# --- Response parsing, shared with the server adapters (sglang_server.py) ---


def parse_generate(request: Request, engine: str, out: dict[str, Any], k: int) -> EngineOutput:
    """One generate answer (`text`, `output_ids`, `prompt_token_ids`, `meta_info`) as an EngineOutput.

    Raises ValueError on a body that is not shaped as SGLang builds it or
    whose logprobs cannot be aligned with the prompt ids.
    """
    if not isinstance(out, dict):
        raise ValueError(f"expected a generate answer object, got {type(out).__name__}")
    meta = answer_meta(out.get("meta_info"))
    prompt_ids = token_id_list(out.get("prompt_token_ids"), "prompt_token_ids")
    output_ids = token_id_list(out.get("output_ids"), "output_ids")
    text = out.get("text")
    return EngineOutput(case_id=request.case_id, engine=engine, variant=request.variant, prompt_ids=prompt_ids,
                        prompt_logprobs=prompt_scores(meta, prompt_ids, k), output_ids=output_ids,
                        output_logprobs=output_scores(meta, output_ids, k),
                        output_text=text if isinstance(text, str) else "")


def answer_meta(meta: Any) -> dict[str, Any]:
    if not isinstance(meta, dict):
        raise ValueError("the answer has no meta_info object")
    finish = meta.get("finish_reason")
    if isinstance(finish, dict) and finish.get("type") == "abort":
        raise ValueError(f"SGLang aborted the request: {finish.get('message') or finish}")
    return meta


def token_id_list(value: Any, name: str) -> list[int]:
    if not isinstance(value, list) or not all(isinstance(t, int) and not isinstance(t, bool) for t in value):
        raise ValueError(f"{name} is missing or not a list of token ids")
    return list(value)


def _entry(value: Any, where: str) -> tuple[float | None, int]:
    """A LogprobEntry, `[logprob, token_id, text]` (api_types.py l.340, l.1693)."""
    if not isinstance(value, (list, tuple)) or len(value) != 3:
        raise ValueError(f"{where}: expected a [logprob, token_id, text] entry, got {value!r:.80}")
    logprob, token_id, _ = value
    if isinstance(token_id, bool) or not isinstance(token_id, int):
        raise ValueError(f"{where}: token id {token_id!r} is not an integer")
    if logprob is not None and (isinstance(logprob, bool) or not isinstance(logprob, (int, float))):
        raise ValueError(f"{where}: logprob {logprob!r} is not a number")
    return (None if logprob is None else float(logprob)), token_id


def _row(row: Any, where: str) -> list[tuple[int, float]]:
    """A top-k row (or None) as (token id, logprob) pairs, best first."""
    if row is None:
        return []
    if not isinstance(row, list):
        raise ValueError(f"{where}: expected a list of entries, got {row!r:.80}")
    pairs = []
    for entry in row:
        logprob, token_id = _entry(entry, where)
        if logprob is None:
            raise ValueError(f"{where}: a top-k entry has no logprob")
        pairs.append((token_id, logprob))
    return sorted(pairs, key=lambda p: -p[1])


def _rows(meta: dict[str, Any], key: str, n: int, required: bool) -> list[Any]:
    rows = meta.get(key)
    if rows is None and not required:
        return [None] * n
    if not isinstance(rows, list) or len(rows) != n:
        size = len(rows) if isinstance(rows, list) else rows
        raise ValueError(f"meta_info.{key} has {size} entries for {n} tokens")
    return rows


def prompt_scores(meta: dict[str, Any], prompt_ids: list[int], k: int) -> list[TokenLogprobs | None]:
    """`input_token_logprobs` (position 0 None) aligned with the prompt ids, top-k keyed by id.

    Where SGLang scored another id than the prompt's (a multimodal placeholder
    replaced by its pad value), the prompt token's logprob comes from
    `input_token_ids_logprobs` or the top-k; absent from both, a ValueError.
    """
    n = len(prompt_ids)
    tokens = _rows(meta, "input_token_logprobs", n, required=True)
    tops = _rows(meta, "input_top_logprobs", n, required=k > 0)
    asked = _rows(meta, "input_token_ids_logprobs", n, required=False)
    scores: list[TokenLogprobs | None] = []
    for i, (entry, prompt_id) in enumerate(zip(tokens, prompt_ids)):
        logprob, token_id = _entry(entry, f"input_token_logprobs[{i}]")
        if i == 0:
            if logprob is not None:
                raise ValueError("input_token_logprobs[0] has a logprob: the prompt is not scored from position 0")
            scores.append(None)
            continue
        if logprob is None:
            raise ValueError(f"input_token_logprobs[{i}] has no logprob")
        top = _row(tops[i], f"input_top_logprobs[{i}]")[:k]
        if token_id != prompt_id:
            logprob = _lookup(_row(asked[i], f"input_token_ids_logprobs[{i}]"), prompt_id)
            logprob = _lookup(top, prompt_id) if logprob is None else logprob
            if logprob is None:
                raise ValueError(f"prompt position {i}: SGLang scored token {token_id}, not the prompt's "
                                 f"{prompt_id} (it replaces multimodal placeholders by pad values before scoring), "
                                 f"and {prompt_id} is neither in token_ids_logprob nor in the top-{k}")
        scores.append(TokenLogprobs(prompt_id, logprob, top))
    return scores


def output_scores(meta: dict[str, Any], output_ids: list[int], k: int) -> list[TokenLogprobs]:
    """`output_token_logprobs` and `output_top_logprobs`, checked against `output_ids`."""
    tokens = _rows(meta, "output_token_logprobs", len(output_ids), required=True)
    tops = _rows(meta, "output_top_logprobs", len(output_ids), required=k > 0)
    scores = []
    for i, (entry, output_id) in enumerate(zip(tokens, output_ids)):
        logprob, token_id = _entry(entry, f"output_token_logprobs[{i}]")
        if logprob is None or token_id != output_id:
            raise ValueError(f"output_token_logprobs[{i}] scores token {token_id} with {logprob}, "
                             f"but output token {i} is {output_id}")
        scores.append(TokenLogprobs(output_id, logprob, _row(tops[i], f"output_top_logprobs[{i}]")[:k]))
    return scores


def _lookup(pairs: list[tuple[int, float]], token_id: int) -> float | None:
    for tid, logprob in pairs:
        if tid == token_id:
            return logprob
    return None
