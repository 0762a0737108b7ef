"""vLLM with one real engine bug class injected, for tests/test_fault_injection.py,
and engine breakdowns aimed at single cases, for tests/test_robustness_engine.py.

`FaultyVLLMEngine` is the ordinary vLLM adapter plus one patch of vLLM's own
code, chosen by the engine option `fault` (one name or a list of them; not passed on to vLLM).
The adapter runs vLLM's engine core in its own process
(VLLM_ENABLE_V1_MULTIPROCESSING=0), so a patch applied here, before the `LLM`
is built, is what the scheduler, the model runner and the model execute.

Each fault changes one path and leaves every other one exact:

  sampler        `Sampler.apply_temperature` divides an inference tensor in
                 place outside inference mode, the real bug: PyTorch raises for
                 every batch with a temperature > 0; greedy batches never call it.
  image-embeds   Qwen2-VL's `_process_image_input` scales precomputed image
                 embeddings (`image_embeds`) by 1.05; pixel input is untouched.
  chunk-slice    `GPUModelRunner._gather_mm_embeddings` (the CPU runner
                 inherits it) takes the encoder-output rows of an image that
                 began in an earlier prefill chunk one row too early; an image
                 scheduled whole (start_idx == 0) gets the right rows.
  encoder-cache  a request served an image's encoder output that another
                 request computed (an encoder-cache hit, `EncoderCacheManager.
                 check_and_update_cache` returned True for it) gets that entry
                 scaled by 1.05; the request that computed it gets it exact.
  children-without-image, stop-offset, special-space, rank-shift, penalties-over-prompt, top-p-ignored,
  processed-logprobs, min-tokens-ignored, bias-next-token, grammar-stale
                 the output side (n > 1, stop strings, special tokens in the
                 text, returned ranks, penalties, the sampler's truncation, the
                 logprobs returned for sampled tokens, a minimum length, a
                 logit bias, a structured-output grammar): see each function.

The engine option `case_faults` ({"CASE" or "CASE@VARIANT": kind}) marks those
requests (their SamplingParams' `extra_args`), and patches of vLLM act on the
marked requests only, in vLLM's own engine core and output processor:

  hang           `EngineCore.step` blocks forever once a marked request is
                 scheduled, after writing the engine process's PID to the
                 engine option `pid_file` (for a test to kill it by PID).
  nan            `LogprobsProcessor` gets the request's prompt logprobs with
                 one position NaN.
  inf            ... its first output step's logprobs +inf.
  short          ... its prompt logprobs one position short and no logprobs
                 for its first output token: fewer logprobs than tokens.
"""
from __future__ import annotations

import copy
import dataclasses
import inspect
import os
import textwrap
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from harness.engines.base import EngineSettings, Request
from harness.engines.vllm_offline import VLLMEngine

SCALE = 1.05  # "slightly wrong": well past the float32 noise floor, far from garbage


def _sampler() -> None:
    import torch
    from vllm.v1.sample import sampler

    eps = sampler._SAMPLING_EPS

    def apply_temperature(logits: torch.Tensor, temp: torch.Tensor, all_random: bool) -> torch.Tensor:
        if not all_random:
            temp = torch.where(temp < eps, 1.0, temp)
        if not logits.is_inference():  # the logits of vLLM's inference-mode forward pass
            with torch.inference_mode():
                logits = logits.clone()
        with torch.inference_mode(False):  # the bug: the in-place update left inference mode
            return logits.div_(temp.unsqueeze(dim=1))

    sampler.Sampler.apply_temperature = staticmethod(apply_temperature)


def _image_embeds() -> None:
    from vllm.model_executor.models.qwen2_vl import Qwen2VLForConditionalGeneration as Model

    original = Model._process_image_input

    def _process_image_input(self: Any, image_input: Any) -> Any:
        embeds = original(self, image_input)
        if image_input["type"] == "image_embeds":
            return tuple(e * SCALE for e in embeds)
        return embeds

    Model._process_image_input = _process_image_input


# The one expression in _gather_mm_embeddings that slices an image's encoder output
# to the rows of the current prefill chunk, and its off-by-one replacement.
SLICE = "mm_embeds_item = encoder_output[start_idx:end_idx]"
OFF_BY_ONE = ("mm_embeds_item = (encoder_output[start_idx - 1 : end_idx - 1] if start_idx > 0 "
              "else encoder_output[start_idx:end_idx])")


def _replace_in_method(cls: type, name: str, old: str, new: str) -> None:
    """Recompile `cls.name` with `old` (which must occur exactly once) replaced by `new`."""
    function = getattr(cls, name)
    source = textwrap.dedent(inspect.getsource(function))
    if source.count(old) != 1:
        raise RuntimeError(f"{cls.__name__}.{name}: expected {old!r} once, found it {source.count(old)} times: "
                           "this vLLM version slices encoder outputs differently")
    namespace: dict[str, Any] = {}
    exec(compile(source.replace(old, new), inspect.getsourcefile(function) or name, "exec"),  # noqa: S102
         function.__globals__, namespace)
    setattr(cls, name, namespace[name])


def _chunk_slice() -> None:
    from vllm.v1.worker.gpu_model_runner import GPUModelRunner

    _replace_in_method(GPUModelRunner, "_gather_mm_embeddings", SLICE, OFF_BY_ONE)


def _encoder_cache() -> None:
    from vllm.v1.core.encoder_cache_manager import EncoderCacheManager
    from vllm.v1.worker.gpu_model_runner import GPUModelRunner

    hits: set[tuple[str, str]] = set()  # (request id, mm hash) served from another request's entry
    check = EncoderCacheManager.check_and_update_cache

    def check_and_update_cache(self: Any, request: Any, input_id: int) -> bool:
        mm_hash = request.mm_features[input_id].identifier
        computed_by_another = request.request_id not in self.cached.get(mm_hash, ())
        hit = check(self, request, input_id)
        if hit and computed_by_another:
            hits.add((request.request_id, mm_hash))
        return hit

    gather = GPUModelRunner._gather_mm_embeddings

    def _gather_mm_embeddings(self: Any, scheduler_output: Any, *args: Any, **kwargs: Any) -> Any:
        # The lookup is by mm hash alone; serve each hit request its own (wrong) copy of the entry.
        served: list[tuple[Any, str, str]] = []
        for req_id in self.input_batch.req_ids:
            for feature in self.requests[req_id].mm_features:
                mm_hash = feature.identifier
                if (req_id, mm_hash) in hits and mm_hash in self.encoder_cache:
                    alias = f"{mm_hash}@hit-by-{req_id}"
                    self.encoder_cache[alias] = self.encoder_cache[mm_hash] * SCALE
                    feature.identifier = alias
                    served.append((feature, mm_hash, alias))
        try:
            return gather(self, scheduler_output, *args, **kwargs)
        finally:
            for feature, mm_hash, alias in served:
                feature.identifier = mm_hash
                self.encoder_cache.pop(alias, None)

    EncoderCacheManager.check_and_update_cache = check_and_update_cache
    GPUModelRunner._gather_mm_embeddings = _gather_mm_embeddings


def _children_without_image() -> None:
    """n > 1: vLLM fans a request out to n child requests, copies of the first; the copies lose its multimodal
    data (SGLang #23685's class: replicas sharing one payload freed after the first), the last child keeps it."""
    from vllm.v1.engine import llm_engine

    def copy_without_media(request: Any) -> Any:
        child = copy.copy(request)
        child.mm_features = None
        return child

    llm_engine.copy = copy_without_media


def _stop_offset() -> None:
    """A stop string found, the text is cut one character too late: it keeps the stop string's first character."""
    from vllm.v1.engine import detokenizer

    check = detokenizer.check_stop_strings

    def check_stop_strings(*args: Any, **kwargs: Any) -> tuple[str, int] | None:
        found = check(*args, **kwargs)
        if found is not None and found[1] != -1:
            return found[0], found[1] + 1
        return found

    detokenizer.check_stop_strings = check_stop_strings


def _special_space() -> None:
    """Special tokens kept in the text (skip_special_tokens off) are followed by an extra space (llama.cpp
    #24008's class: the same ids, other text)."""
    from vllm.v1.engine.detokenizer import FastIncrementalDetokenizer

    decode_next = FastIncrementalDetokenizer.decode_next

    def spaced(self: Any, next_token_id: int) -> str:
        token = decode_next(self, next_token_id)
        added = self.tokenizer.get_added_tokens_decoder().get(next_token_id)  # the Rust tokenizer's
        return token + " " if token and added is not None and added.special else token

    FastIncrementalDetokenizer.decode_next = spaced


def _rank_shift() -> None:
    """A sampled token that is not the most likely one shifts the returned top-k ranks by one (vLLM #36746's
    class: ranks shifted by the de-duplication of the sampled token): the values right, the ranks 2..k+1.
    Greedy tokens (rank 1) and prompt positions are untouched."""
    from vllm.logprobs import FlatLogprobs, Logprob
    from vllm.v1.engine import logprobs

    append = logprobs.append_logprobs_for_next_position
    update = logprobs.LogprobsProcessor._update_sample_logprobs
    sampling = threading.local()

    def shifted(request_logprobs: Any, token_ids: list[int], values: list[float], decoded: Any, rank: int,
                num_logprobs: int) -> None:
        if not getattr(sampling, "on", False) or rank == 1:
            return append(request_logprobs, token_ids, values, decoded, rank, num_logprobs)
        count = len(values) if num_logprobs == -1 else num_logprobs
        ranks = (rank, *range(2, count + 2))
        if isinstance(request_logprobs, FlatLogprobs):
            request_logprobs.append_fast(token_ids, values, iter(ranks), decoded)
        else:
            request_logprobs.append({tid: Logprob(logprob=lp, rank=r, decoded_token=tok)
                                     for tid, lp, r, tok in zip(token_ids, values, ranks, decoded)})
        return None

    def update_sample_logprobs(self: Any, *args: Any, **kwargs: Any) -> None:
        sampling.on = True
        try:
            update(self, *args, **kwargs)
        finally:
            sampling.on = False

    logprobs.append_logprobs_for_next_position = shifted
    logprobs.LogprobsProcessor._update_sample_logprobs = update_sample_logprobs


def _penalties_over_prompt() -> None:
    """Presence and frequency penalties count the prompt's tokens too, image placeholders among them (vLLM
    #33338's class): the repetition penalty, which counts them by its rule, is unchanged."""
    import torch
    from vllm.v1.sample.ops import penalties

    apply = penalties.apply_penalties

    def counted_with_prompt(logits: Any, prompt: Any, output: Any, *rest: Any) -> Any:
        return apply(logits, prompt, torch.cat([prompt, output], dim=1), *rest)

    penalties.apply_penalties = counted_with_prompt


def _top_p_ignored() -> None:
    """The CPU sampler draws from the top-k alone: the request's top-p is dropped (a sampler that ignores or
    misapplies a truncation). Greedy requests, and top-k 1, draw the same tokens as before."""
    from vllm.v1.sample.ops import topk_topp_sampler

    apply = topk_topp_sampler.apply_top_k_top_p

    def without_top_p(logits: Any, k: Any, p: Any) -> Any:
        return apply(logits, k, None)

    topk_topp_sampler.apply_top_k_top_p = without_top_p


def _processed_logprobs() -> None:
    """Sampled requests get the processed logprobs (after temperature, top-k/top-p, renormalized) where the raw
    ones were asked for (vLLM #26014's class): the sampler runs in `processed_logprobs` mode whatever the engine's
    `logprobs_mode` says. Greedy requests keep their raw logprobs (vLLM computes those before sampling)."""
    from vllm.v1.sample.ops.topk_topp_sampler import TopKTopPSampler

    init = TopKTopPSampler.__init__

    def processed(self: Any, logprobs_mode: Any = "raw_logprobs", *args: Any, **kwargs: Any) -> None:
        init(self, "processed_logprobs", *args, **kwargs)

    TopKTopPSampler.__init__ = processed


def _min_tokens_ignored() -> None:
    """`min_tokens` not honoured: vLLM's `MinTokensLogitsProcessor` masks nothing, so an answer may end at EOS
    before its minimum length (the class of a stop rule an engine does not honour). Requests without a minimum are
    untouched."""
    from vllm.v1.sample.logits_processor.builtin import MinTokensLogitsProcessor

    def unmasked(self: Any, logits: Any) -> Any:
        return logits

    MinTokensLogitsProcessor.apply = unmasked


def _bias_next_token() -> None:
    """A logit bias added to the next token id's logit instead of its own (an off-by-one in the processor's
    index, the class of a bias landing on the wrong token or row): requests without a bias are untouched."""
    from vllm.v1.sample.logits_processor.builtin import LogitBiasLogitsProcessor

    def shifted(self: Any, logits: Any) -> Any:
        if self.biases:
            rows, ids = self.logits_slice
            logits[(rows, ids + 1)] += self.bias_tensor
        return logits

    LogitBiasLogitsProcessor.apply = shifted


def _grammar_stale() -> None:
    """A structured-output grammar that does not advance with the answer: `accept_tokens` counts the tokens but
    the matcher stays at the start, so every step is masked as the first (the class of a grammar state not kept
    per request). Requests without a grammar are untouched."""
    from vllm.v1.structured_output.backend_xgrammar import XgrammarGrammar

    def counted(self: Any, request_id: str, tokens: list[int]) -> bool:
        self.num_processed_tokens += len(tokens)
        return True

    XgrammarGrammar.accept_tokens = counted


FAULTS: dict[str, Callable[[], None]] = {
    "sampler": _sampler,
    "image-embeds": _image_embeds,
    "chunk-slice": _chunk_slice,
    "encoder-cache": _encoder_cache,
    "children-without-image": _children_without_image,
    "stop-offset": _stop_offset,
    "special-space": _special_space,
    "rank-shift": _rank_shift,
    "penalties-over-prompt": _penalties_over_prompt,
    "top-p-ignored": _top_p_ignored,
    "processed-logprobs": _processed_logprobs,
    "min-tokens-ignored": _min_tokens_ignored,
    "bias-next-token": _bias_next_token,
    "grammar-stale": _grammar_stale,
}


MARK = "vlm_parity_fault"  # the key in a marked request's SamplingParams.extra_args
CASE_FAULTS = ("hang", "nan", "inf", "short")


def _marked(params: Any) -> str | None:
    return (getattr(params, "extra_args", None) or {}).get(MARK)


def _hang(pid_file: str) -> None:
    from vllm.v1.engine.core import EngineCore

    step = EngineCore.step

    def hanging_step(self: Any) -> Any:
        if any(_marked(r.sampling_params) == "hang" for r in self.scheduler.requests.values()):
            tmp = f"{pid_file}.tmp"
            with open(tmp, "w") as f:
                f.write(str(os.getpid()))
            os.replace(tmp, pid_file)
            while True:  # until killed, or stopped by the harness's stall guard
                time.sleep(1)
        return step(self)

    EngineCore.step = hanging_step


def _bad_logprobs() -> None:
    import numpy as np
    from vllm.v1.engine.logprobs import LogprobsProcessor

    new, update_prompt, update_sample = (LogprobsProcessor.from_new_request, LogprobsProcessor._update_prompt_logprobs,
                                         LogprobsProcessor._update_sample_logprobs)

    def from_new_request(cls: Any, tokenizer: Any, request: Any) -> Any:
        processor = new.__func__(cls, tokenizer, request)
        processor.fault = _marked(request.sampling_params)
        processor.steps = 0
        return processor

    def _update_prompt_logprobs(self: Any, tensors: Any) -> None:
        fault = getattr(self, "fault", None)
        if fault == "nan":
            logprobs = tensors.logprobs.clone()
            logprobs[len(logprobs) // 2] = float("nan")
            tensors = tensors._replace(logprobs=logprobs)
        elif fault == "short":
            tensors = type(tensors)(*(t[:-1] for t in tensors[:3]), *tensors[3:])
        update_prompt(self, tensors)

    def _update_sample_logprobs(self: Any, lists: Any) -> None:
        fault, first = getattr(self, "fault", None), getattr(self, "steps", 0) == 0
        self.steps = getattr(self, "steps", 0) + 1
        if fault == "short" and first:
            return
        if fault == "inf" and first:
            lists = lists._replace(logprobs=np.full_like(lists.logprobs, np.inf))
        update_sample(self, lists)

    LogprobsProcessor.from_new_request = classmethod(from_new_request)
    LogprobsProcessor._update_prompt_logprobs = _update_prompt_logprobs
    LogprobsProcessor._update_sample_logprobs = _update_sample_logprobs


class FaultyVLLMEngine(VLLMEngine):
    """The vLLM adapter with `options["fault"]` (one of FAULTS) patched into vLLM, and/or the
    requests named in `options["case_faults"]` broken in vLLM as CASE_FAULTS describe."""

    def __init__(self, settings: EngineSettings) -> None:
        options = dict(settings.options)
        fault = options.pop("fault", None)
        self.faults: list[str] = [fault] if isinstance(fault, str) else list(fault or [])
        self.case_faults: dict[str, str] = dict(options.pop("case_faults", {}))
        self.pid_file: str | None = options.pop("pid_file", None)
        if any(f not in FAULTS for f in self.faults) or not (self.faults or self.case_faults):
            raise ValueError(f"engine option 'fault' must be among {', '.join(FAULTS)}; got {fault!r}")
        bad = {k: v for k, v in self.case_faults.items() if v not in CASE_FAULTS}
        if bad:
            raise ValueError(f"engine option 'case_faults': kinds must be among {', '.join(CASE_FAULTS)}; got {bad}")
        if "hang" in self.case_faults.values() and not self.pid_file:
            raise ValueError("engine option 'case_faults' has a 'hang': give 'pid_file' too")
        super().__init__(dataclasses.replace(settings, options=options))  # imports vllm

    def start(self, requests: Sequence[Request]) -> None:
        for fault in self.faults:  # each patches its own code path: several can be injected at once
            FAULTS[fault]()
        if self.pid_file:
            _hang(self.pid_file)
        if self.case_faults:
            _bad_logprobs()
        super().start(requests)

    def _params(self, request: Request) -> Any:
        params = super()._params(request)
        kind = self.case_faults.get(f"{request.case_id}@{request.variant}", self.case_faults.get(request.case_id))
        if kind:
            params.extra_args = {MARK: kind}
        return params

    def info(self) -> dict[str, Any]:
        return {**super().info(), "faults": self.faults, "case_faults": self.case_faults}
