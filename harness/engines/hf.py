"""The HuggingFace transformers reference: one case at a time, unbatched.

Unbatched so no padding or batch-shape effect can leak into the reference.
Logprobs are float32 log-softmax of the raw logits whatever the model dtype
(float64 for a float64 model), so the reference's own rounding is only the
model's, not the scoring's.

A request with `overrides` (a floor run: another dtype, another attention
kernel) is computed by a second copy of the model loaded with them; one such
copy is held at a time, so the floor runs of one kind should come together.
"""
from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
from PIL import Image

from harness.core.hardware import machine
from harness.core.schema import EngineOutput, ProcessedStep, Scores, TokenLogprobs
from harness.engines.base import Capabilities, Engine, EngineSettings, Penalties, Request, Sampling, Structured
from harness.engines.capture import CAPTURED
from harness.engines.constraints import ChoiceMask, bias_ids, biased, finite, token_texts
from harness.engines.stops import min_tokens_mask, under_stops, with_tokens
from harness.inputs.decode import decode_all, decode_videos
from harness.inputs.detokenize import Detokenizer


class HFEngine(Engine):
    name = "hf"
    # The reference: greedy only, the harness's rendered prompt and PIL pixels; `flat-grey`
    # replaces each image by a grey one of the same size (the image-sensitivity check).
    capabilities = Capabilities(max_top_k=1000, sampling=False, image_inputs=frozenset({"pixels", "flat-grey"}),
                                overrides=frozenset({"dtype", "attn_implementation"}),
                                request_fields=frozenset({"mm_kwargs", "videos", "penalties", "stop", "logit_bias",
                                                          "structured"}),
                                stages=CAPTURED,
                                engine_text=True, scores=True)

    def __init__(self, settings: EngineSettings) -> None:
        super().__init__(settings)
        import torch
        import transformers
        from transformers import AutoModelForImageTextToText, AutoProcessor

        torch.manual_seed(settings.seed)
        self._torch = torch
        self._versions = {"transformers": transformers.__version__, "torch": torch.__version__}
        self._load = AutoModelForImageTextToText.from_pretrained
        self.processor = AutoProcessor.from_pretrained(settings.model)
        self.model = self._load_model(settings.dtype, settings.options)
        self._other: tuple[tuple[tuple[str, Any], ...], Any] | None = None  # (overrides, model)
        self._last: tuple[str, Any] | None = None  # the last request's processor output, by what it depends on
        self._masks: dict[tuple[Structured, int], ChoiceMask] = {}  # built once per constraint: a vocabulary's pass

    def _load_model(self, dtype: str, options: dict[str, Any]) -> Any:
        return self._load(self.settings.model, dtype=getattr(self._torch, dtype), **options).to(
            self.settings.device).eval()

    def _model_for(self, overrides: dict[str, Any]) -> Any:
        """The model a request is computed with: the reference's, or a copy loaded with the request's overrides
        (the previous copy is released first, so at most two are in memory)."""
        if not overrides:
            return self.model
        key = tuple(sorted(overrides.items()))
        if self._other is None or self._other[0] != key:
            self._other = None
            options = {**self.settings.options, **{k: v for k, v in overrides.items() if k != "dtype"}}
            self._other = (key, self._load_model(overrides.get("dtype", self.settings.dtype), options))
        return self._other[1]

    def info(self) -> dict[str, Any]:
        """Versions, and the choices transformers made that move logprobs (fast or slow image
        processor, attention kernel): stored references record them."""
        return {**super().info(), **self._versions,
                "image_processor": type(getattr(self.processor, "image_processor", None)).__name__,
                "attn_implementation": getattr(self.model.config, "_attn_implementation", None),
                "hardware": machine(self._torch)}

    def run(self, requests: Sequence[Request]) -> Iterator[EngineOutput]:
        for request in requests:
            try:
                yield self._one(request)
            except Exception as exc:  # one bad case must not end the run
                yield EngineOutput.failed(request.case_id, self.name, f"{type(exc).__name__}: {exc}", request.variant)

    def _inputs(self, request: Request) -> tuple[Any, Any]:
        """The model the request is computed with, and the processor's output for it (the last one's again for
        the same prompt and media: the scorings of one case's answers come together)."""
        key = repr((request.prompt_text, request.images, request.videos, request.decoder, request.image_input,
                    sorted(request.mm_kwargs.items())))
        if self._last is None or self._last[0] != key:
            self._last = (key, self._processed(request))
        return self._model_for(request.overrides), self._last[1]

    def _processed(self, request: Request) -> Any:
        images = decode_all(request.images, request.decoder) or None
        if images and request.image_input == "flat-grey":
            images = [Image.new("RGB", image.size, (128, 128, 128)) for image in images]
        videos = decode_videos(request.videos, frozen=request.image_input == "flat-grey") or None
        media = {"images": images} | ({"videos": videos} if videos else {})
        return self.processor(text=[request.prompt_text], return_tensors="pt", **media, **request.mm_kwargs).to(
            self.settings.device)

    def capture(self, request: Request) -> dict[str, Any]:
        from harness.engines.capture import Recorder

        model, inputs = self._inputs(request)
        recorder = Recorder(model, model.config.get_text_config().num_hidden_layers)
        try:
            with self._torch.inference_mode():
                model(**inputs)
            return {**recorder.arrays(), "prompt_ids": inputs["input_ids"][0].cpu().numpy()}
        finally:
            recorder.remove()

    def _one(self, request: Request) -> EngineOutput:
        from transformers import GenerationConfig, LogitsProcessorList

        torch = self._torch
        model, inputs = self._inputs(request)
        if request.forced:
            return self._forced(request, model, inputs)
        prompt_ids = inputs["input_ids"][0].tolist()
        k = self.settings.top_k
        scoring = _scoring_dtype(model)

        start = time.perf_counter()
        with torch.inference_mode():
            logits = model(**inputs).logits[0]
            logprobs = torch.log_softmax(logits.to(scoring), dim=-1)
            prompt_logprobs = _prompt_scores(logprobs, prompt_ids, k)
            prefill_s = time.perf_counter() - start

            start = time.perf_counter()
            # A fresh GenerationConfig: plain greedy, none of the checkpoint's defaults (a
            # repetition penalty vLLM would not apply). eos_token_id=[] generates exactly
            # max_new_tokens, like vLLM's ignore_eos, without masking EOS out of the logits.
            config = GenerationConfig(
                max_new_tokens=request.max_new_tokens, do_sample=False, eos_token_id=[],
                pad_token_id=self.processor.tokenizer.pad_token_id, output_logits=True, return_dict_in_generate=True,
            )
            # The engines' order: the constraint's mask on the logits, then (vLLM's Sampler) the minimum length,
            # the logit bias, the penalties.
            choice = self._choice_mask(request.structured, model) if request.structured else None
            stop = with_tokens(request.stop, self.processor.tokenizer) if request.stop else None
            processors = LogitsProcessorList(
                ([choice.processor(len(prompt_ids))] if choice else [])
                + ([min_tokens_mask(stop, self._eos_ids, len(prompt_ids))] if stop else [])
                + ([biased(bias_ids(self.processor.tokenizer, request.logit_bias))] if request.logit_bias else [])
                + ([penalized(request.penalties, len(prompt_ids))] if request.penalties else []))
            generated = model.generate(**inputs, generation_config=config, logits_processor=processors)
            decode_s = time.perf_counter() - start
        output_ids = generated.sequences[0, len(prompt_ids):].tolist()
        # What the engines score: the raw logits, under a constraint with its mask applied.
        steps = torch.cat(generated.logits)
        steps = choice.masked_steps(steps, output_ids) if choice else steps
        output_logprobs = [_score(torch.log_softmax(step.to(scoring), dim=-1), tid, k)
                           for step, tid in zip(steps, output_ids)]
        # The reference's self-consistency check; a floor run is not the reference.
        rescored = [] if request.overrides else self._rescore(inputs, generated.sequences, len(prompt_ids), choice)
        output = EngineOutput(
            case_id=request.case_id,
            engine=self.name,
            variant=request.variant,
            prompt_ids=prompt_ids,
            prompt_logprobs=prompt_logprobs,
            output_ids=output_ids,
            output_logprobs=output_logprobs,
            output_text=self._decode(output_ids),
            finish_reason="length",  # EOS ignored: exactly max_new_tokens, as the engines are asked
            timings={"prefill_s": prefill_s, "decode_s": decode_s},
            diagnostics={} if request.overrides else {"self_consistency_max": max(
                (abs(r - o.logprob) for r, o in zip(rescored, output_logprobs)), default=0.0)},
        )
        # Generated past every stop rule (the stop ids masked until min_tokens): cut where the rules end it.
        return under_stops(output, stop, self._eos_ids, self._decode) if stop else output

    def _decode(self, ids: Sequence[int]) -> str:
        return self.processor.decode(list(ids), skip_special_tokens=True)

    @functools.cached_property
    def _eos_ids(self) -> frozenset[int]:
        return Detokenizer(self.settings.model).eos_ids

    def _rescore(self, inputs: Any, sequences: Any, prompt_len: int, choice: ChoiceMask | None) -> list[float]:
        """Logprobs of the generated tokens from one forward pass over prompt + output (under `choice`'s mask).

        generate() scores them step by step with a KV cache; a reference whose two
        answers disagree beyond tolerance cannot be used to blame an engine.
        """
        with self._torch.inference_mode():
            logits = self.model(**self._extended(inputs, sequences)).logits[0, prompt_len - 1:-1].float()
        output = sequences[0, prompt_len:].tolist()
        logprobs = self._torch.log_softmax(choice.masked_steps(logits, output) if choice else logits, dim=-1)
        return [float(logprobs[i, tid]) for i, tid in enumerate(output)]

    def _choice_mask(self, structured: Structured, model: Any) -> ChoiceMask:
        key = (structured, model.get_output_embeddings().weight.shape[0])
        if key not in self._masks:
            self._masks[key] = ChoiceMask(structured, self._token_texts, self._eos_ids, key[1])
        return self._masks[key]

    @functools.cached_property
    def _token_texts(self) -> list[str | None]:
        return token_texts(self.processor.tokenizer)

    def _extended(self, inputs: Any, sequences: Any) -> dict[str, Any]:
        """The processor's inputs for the prompt followed by output tokens (`sequences`: prompt and output ids)."""
        torch = self._torch
        prompt_len = inputs["input_ids"].shape[1]
        extra = sequences.shape[1] - prompt_len
        full = {**inputs, "input_ids": sequences}
        for key, value in inputs.items():  # per-token inputs (attention mask, token types) cover the output too
            if key != "input_ids" and getattr(value, "shape", None) == (1, prompt_len):
                fill = torch.ones if key == "attention_mask" else torch.zeros
                full[key] = torch.cat([value, fill((1, extra), dtype=value.dtype, device=value.device)], dim=1)
        return full

    def _forced(self, request: Request, model: Any, inputs: Any) -> EngineOutput:
        """Another engine's output ids scored in one forward over the prompt and them: their raw logprobs with
        the top-k (what an engine returns by default) and each step's processed distribution
        (`processed_steps`). Teacher-forced, so sampled answers are judged without the engine's random stream."""
        torch = self._torch
        prompt_ids = inputs["input_ids"][0].tolist()
        forced = list(request.forced)
        sequences = torch.tensor([prompt_ids + forced], dtype=inputs["input_ids"].dtype,
                                 device=inputs["input_ids"].device)
        scoring = _scoring_dtype(model)
        start = time.perf_counter()
        with torch.inference_mode():
            logits = model(**self._extended(inputs, sequences)).logits[0, len(prompt_ids) - 1:-1].to(scoring)
        if request.structured:  # the engine's raw logits are the masked ones
            choice = self._choice_mask(request.structured, model)
            logits = choice.masked_steps(logits, forced)
        raw = torch.log_softmax(logits, dim=-1)
        k = self.settings.top_k
        return EngineOutput(
            case_id=request.case_id, engine=self.name, variant=request.variant, prompt_ids=prompt_ids,
            output_ids=forced, output_logprobs=[_score(raw[i], tid, k) for i, tid in enumerate(forced)],
            output_text=self._decode(forced),
            processed=processed_steps(logits, sequences[0], len(prompt_ids), request.sampling, request.penalties,
                                      bias_ids(self.processor.tokenizer, request.logit_bias)),
            timings={"prefill_s": time.perf_counter() - start})


def penalized(penalties: Penalties, prompt_len: int) -> Callable[[Any, Any], Any]:
    """A logits processor applying `penalties` by the rule the engines document (vLLM's `apply_penalties`,
    SGLang's penalizers, OpenAI's API): the repetition penalty over every token of the prompt and the output so
    far (a positive logit divided by it, a negative one multiplied), then the frequency penalty times each
    token's count in the output and the presence penalty once per token in the output (prompt tokens, image
    placeholders among them, never count for these two). One processor, so the order is the engines' whatever
    transformers' own order of processors is. The returned logprobs stay the raw ones, as the engines'."""

    def apply(input_ids: Any, scores: Any) -> Any:
        import torch

        scores = scores.clone()
        vocab = scores.shape[-1]
        if penalties.repetition != 1.0:
            seen = torch.zeros(vocab, dtype=torch.bool, device=scores.device)
            seen[input_ids[0]] = True
            picked = scores[0, seen]
            scores[0, seen] = torch.where(picked > 0, picked / penalties.repetition, picked * penalties.repetition)
        counts = torch.bincount(input_ids[0, prompt_len:], minlength=vocab)[:vocab].to(scores.dtype)
        scores[0] -= penalties.frequency * counts + penalties.presence * (counts > 0).to(scores.dtype)
        return scores

    return apply


def processed_steps(logits: Any, sequence: Any, prompt_len: int, sampling: Sampling | None,
                    penalties: Penalties | None, bias: Mapping[int, float] | None = None) -> list[ProcessedStep]:
    """Each output step's processed distribution as the engines' samplers make it (vLLM's `Sampler`: the logit bias
    and penalties on the raw logits, then the temperature, then top-k, then top-p on the top-k renormalized): the
    sampled token's logprob and rank under them and the temperature, the probability above it, of the top-k, and
    of what top-k and top-p keep. `logits[i]` scores `sequence[prompt_len + i]`."""
    import torch

    temperature = sampling.temperature if sampling and sampling.temperature > 0 else 1.0
    top_k, top_p = (sampling.top_k, sampling.top_p) if sampling else (0, 1.0)
    penalize = penalized(penalties, prompt_len) if penalties else None
    add_bias = biased(bias) if bias else None
    steps = []
    for i in range(logits.shape[0]):
        at = prompt_len + i
        step = logits[i:i + 1]
        if add_bias is not None:
            step = add_bias(None, step)
        if penalize is not None:
            step = penalize(sequence[None, :at], step)
        q = torch.log_softmax(step[0] / temperature, dim=-1)
        token = int(sequence[at])
        own = q[token]
        probs, order = q.exp().sort(descending=True)
        kept = probs[:top_k] if 0 < top_k < len(probs) else probs
        top_k_mass = float(kept.sum())
        before = torch.cumsum(kept, 0) - kept  # the renormalized mass above each kept token: top-p keeps it below p
        nucleus = kept[before / top_k_mass < top_p] if top_p < 1.0 else kept
        rank, above = int((q > own).sum()) + 1, float(q.exp()[q > own].sum())
        drawn = nucleus / nucleus.sum()  # what the sampler draws from, likeliest first
        middles = torch.cumsum(drawn, 0) - drawn / 2
        tied = float(q.exp()[q == own].sum())  # a tie's tokens share its middle
        position = (above + tied / 2) / float(nucleus.sum()) if rank <= len(nucleus) else None
        steps.append(ProcessedStep(token, float(own), rank, above, top_k_mass, float(nucleus.sum()),
                                   float(q[order[top_k - 1]]) if 0 < top_k < len(probs) else None, position,
                                   float((drawn.double() * (middles.double() - 0.5) ** 2).sum())))
    return steps


def _scoring_dtype(model: Any) -> Any:
    """Logprobs are scored in float32 whatever the model's dtype, in float64 for a float64 model."""
    import torch

    return torch.float64 if model.dtype == torch.float64 else torch.float32


def _prompt_scores(logprobs: Any, prompt_ids: list[int], k: int) -> Scores:
    """Every prompt position's entry at once, as columns (`_score` at each: position i scores token i by the
    logprobs after i - 1; position 0 scores nothing): one top-k over the whole prompt, not one per position."""
    import torch

    n = len(prompt_ids)
    if n < 2:  # nothing before any token: no position is scored
        return Scores.of([None] * max(n, 1))
    rows = logprobs[:n - 1]
    values, ids = rows.topk(min(k, rows.shape[-1]), dim=-1)
    own = rows.gather(1, torch.as_tensor(prompt_ids[1:], dtype=torch.long, device=rows.device)[:, None])[:, 0]
    values, ids, own = values.double().cpu().numpy(), ids.cpu().numpy(), own.double().cpu().numpy()
    kept = np.isfinite(values)  # best first: what a constraint excluded is last
    present = np.arange(n) > 0
    return Scores(present, np.array([-1, *prompt_ids[1:]], dtype=np.int64), np.concatenate([[np.nan], own]),
                  np.concatenate([np.full((1, ids.shape[1]), -1), np.where(kept, ids, -1)]),
                  np.concatenate([np.full((1, ids.shape[1]), np.nan), np.where(kept, values, np.nan)]),
                  np.concatenate([[0], kept.sum(axis=1)]).astype(np.int64))


def _score(logprobs: Any, token_id: int, k: int) -> TokenLogprobs:
    """The actual token's logprob and the top-k at one position."""
    values, ids = logprobs.topk(k)
    return TokenLogprobs(token_id, float(logprobs[token_id]), finite(list(zip(ids.tolist(), values.tolist()))))
