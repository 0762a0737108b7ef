"""The one engine interface: what an engine is asked (Request), how it is started
(EngineSettings), what it can do (Capabilities), and the registry by string.

Adapters are named `module:Class`, so one can live outside this package (a
test's fake engine, a user's own engine module) and nothing imports every
backend: the worker imports only the adapter it runs.
"""
from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, ClassVar

from harness.core.schema import EngineOutput, from_dict
from harness.engines.features import FEATURES, REQUEST_FIELDS

# Built-in adapters; more come from the `vlm_parity.engines` entry-point group or a `module:Class` name.
BUILTIN_ENGINES = {
    "hf": "harness.engines.hf:HFEngine",
    "vllm": "harness.engines.vllm_offline:VLLMEngine",
    "vllm-server": "harness.engines.vllm_server:VLLMServerEngine",
    "openai": "harness.engines.openai_chat:OpenAIChatEngine",
    "sglang": "harness.engines.sglang_offline:SGLangEngine",
    "sglang-server": "harness.engines.sglang_server:SGLangServerEngine",
    "sglang-chat": "harness.engines.sglang_server:SGLangChatEngine",
}
ENTRY_POINT_GROUP = "vlm_parity.engines"


@dataclass(frozen=True)
class Sampling:
    """Sampling instead of greedy: temperature > 0 takes paths greedy never does."""

    temperature: float
    top_p: float = 1.0
    seed: int = 0
    top_k: int = 0  # 0: off; 1 with temperature > 0 is greedy through the sampler (vLLM takes n > 1 only so)


@dataclass(frozen=True)
class Stop:
    """Where an output ends (`stop` in variants.yaml): the model's EOS honoured or not, stop strings (the text
    ends before one; the ids include the token that completed it), stop token ids (included), written as ids or,
    since ids are the model's own, as `tokens`: texts whose first token by the model's tokenizer is one
    (`harness.engines.stops.with_tokens`); none of them before `min_tokens` output tokens."""

    ignore_eos: bool = True
    strings: tuple[str, ...] = ()
    token_ids: tuple[int, ...] = ()
    min_tokens: int = 0
    tokens: tuple[str, ...] = ()


@dataclass(frozen=True)
class Penalties:
    """Penalties as the engines document them (`penalties` in variants.yaml): OpenAI's presence and frequency
    penalties subtract from the logits of tokens already in the output (prompt tokens never count), the
    repetition penalty (CTRL's, transformers' and vLLM's) divides a positive logit and multiplies a negative one
    of every token in the prompt or the output."""

    presence: float = 0.0
    frequency: float = 0.0
    repetition: float = 1.0


@dataclass(frozen=True)
class Structured:
    """Structured output (`structured` in variants.yaml): the answer is one of `choice`, spelled by any tokens
    (the engines compile it to a grammar whose mask applies to the logits: `harness.engines.constraints`)."""

    choice: tuple[str, ...]


@dataclass(frozen=True)
class Detokenize:
    """How output ids become text (`detokenize` in variants.yaml), as the engines' sampling options say it."""

    skip_special_tokens: bool = True
    spaces_between_special_tokens: bool = True


def _by_variant(name: str) -> Any:
    """A request field a variant may set (its `request:` mapping in variants.yaml), with the vocabulary's default."""
    default = REQUEST_FIELDS[name].default
    return field(default_factory=dict) if isinstance(default, dict) else field(default=default)


@dataclass(frozen=True)
class Request:
    """One case on one variant as an engine sees it.

    `prompt_text` is rendered once by the harness with the reference's chat
    template (the "rendered" prompt form); `messages` are the case's chat
    messages, for the "native" form where the engine renders them itself.
    `image_input` says how images reach the engine: decoded `pixels` (by
    `decoder`), file `bytes` the engine decodes, precomputed `embeddings`, or
    `processor` output; a video's frames are always decoded with PIL (the decoder
    variants are about image files). `submit` is "batched" (one submission with every other
    batched request) or "alone"; `repeats` submits the request that many times.
    `overrides` are model settings this one request is computed with instead of
    the engine's (a floor run of the reference: `dtype`, `attn_implementation`);
    only an engine that declares them in `Capabilities.overrides` gets such requests.
    `mm_kwargs` are per-request options of the model's multimodal processor (a smaller
    `max_pixels`); `prompt_logprobs` off lets an engine read its prefix cache (vLLM never
    reads it for a request that scores its prompt); `warmup` sends the same prompt first
    with another image of the same size (`other-image`) or the same image
    (`same-image`), so the request meets a warm prefix cache.
    """

    case_id: str
    prompt_text: str
    variant: str = ""
    messages: tuple[dict[str, Any], ...] = ()
    images: tuple[str, ...] = ()
    videos: tuple[tuple[str, ...], ...] = ()  # each video its frames' files, in order
    decoder: str = _by_variant("decoder")
    prompt_form: str = _by_variant("prompt_form")
    image_input: str = _by_variant("image_input")
    max_new_tokens: int = 16
    sampling: Sampling | None = _by_variant("sampling")
    n: int = _by_variant("n")
    stop: Stop | None = _by_variant("stop")
    penalties: Penalties | None = _by_variant("penalties")
    detokenize: Detokenize | None = _by_variant("detokenize")
    logit_bias: dict[str, float] = _by_variant("logit_bias")  # by text: each text's first token
    structured: Structured | None = _by_variant("structured")
    submit: str = _by_variant("submit")
    repeats: int = _by_variant("repeats")
    mm_kwargs: dict[str, Any] = _by_variant("mm_kwargs")
    prompt_logprobs: bool = _by_variant("prompt_logprobs")
    warmup: str | None = _by_variant("warmup")
    overrides: dict[str, Any] = field(default_factory=dict)
    # Another engine's output ids for the reference to score (`Capabilities.scores`): one forward over the prompt
    # and them, their raw logprobs and, under the request's `sampling` and `penalties`, each step's processed
    # distribution; nothing is generated.
    forced: tuple[int, ...] = ()

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Request:
        return from_dict(cls, d)


@dataclass(frozen=True)
class EngineSettings:
    """How to start an engine.

    `features` are engine-neutral settings a variant asks for (named in
    `harness.engines.features.FEATURES`); each adapter translates the ones it
    declares in `Capabilities.features` into its own options. `options` are
    engine-specific (vLLM's `enforce_eager`), passed through untouched. `url`
    attaches a server adapter to a running server; `chat_template` is the
    reference's, for adapters that render the "rendered" form server-side.
    """

    model: str
    dtype: str = "float32"
    device: str = "cpu"
    top_k: int = 5
    seed: int = 0
    features: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    url: str | None = None
    chat_template: str | None = None

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EngineSettings:
        return from_dict(cls, d)


@dataclass(frozen=True)
class Capabilities:
    """What an adapter returns and accepts. The plan skips a variant that needs
    what an engine lacks, and a metric it cannot supply is `unavailable`."""

    prompt_logprobs: bool = True
    output_logprobs: bool = True
    prompt_ids: bool = True
    output_ids: bool = True
    max_top_k: int = 20
    prompt_forms: frozenset[str] = frozenset({"rendered"})
    image_inputs: frozenset[str] = frozenset({"pixels"})
    # Why an image input form the adapter has is missing for this model (the skip reason says it).
    missing_inputs: Mapping[str, str] = field(default_factory=dict)
    sampling: bool = True
    # Its output text is the engine's own detokenization of its output ids (checked against the reference
    # tokenizer's decode: `text_matches_ids`); a test's fake engine writes made-up text.
    engine_text: bool = False
    features: frozenset[str] = frozenset()  # the engine features (harness.engines.features) it maps
    overrides: frozenset[str] = frozenset()  # per-request model settings it can recompute with (floor runs)
    # The `declared` request fields (harness.engines.features) it honours: a variant that sets one away from its
    # default, or a case with videos, is skipped, with the reason, on an engine that does not.
    request_fields: frozenset[str] = frozenset()
    # The stages of `harness.judging.ladder` its `capture` fills (hooks inside the model it runs in process);
    # the others are `unavailable` on its ladder, with the reason.
    stages: frozenset[str] = frozenset()
    # It scores another engine's sampled tokens (`Request.forced`): a reference that does not, leaves sampled
    # answers judged on their prompt logprobs and what they claim only.
    scores: bool = False

    def unavailable(self) -> dict[str, str]:
        """Output fields this engine cannot supply, with the reason (for the comparators)."""
        missing = {}
        for name in ("prompt_logprobs", "output_logprobs", "prompt_ids", "output_ids"):
            if not getattr(self, name):
                missing[name] = f"the engine does not return {name.replace('_', ' ')}"
        if self.max_top_k <= 0:
            missing["top_k"] = "the engine does not return top-k candidates"
        return missing


class Engine(ABC):
    """Constructed and started once, then given submissions of requests; yields one
    EngineOutput per request and attempt.

    A request that fails yields an output with `error` set; only a failure to
    start the engine raises.
    """

    name: ClassVar[str] = ""
    capabilities: ClassVar[Capabilities] = Capabilities()

    def __init__(self, settings: EngineSettings) -> None:
        self.settings = settings

    @classmethod
    def version(cls) -> str | None:
        """The engine's version without starting it (for known failures and provenance)."""
        return None

    @classmethod
    def image_loader(cls) -> Callable[[Path], Any] | None:
        """The engine's own image-file loader (what its native form decodes with), for decode-diff;
        None when the engine does not decode images itself."""
        return None

    @classmethod
    def capabilities_for(cls, model: str) -> Capabilities:
        """What the engine can do with this checkpoint (an input form may exist only for some models)."""
        return cls.capabilities

    def start(self, requests: Sequence[Request]) -> None:
        """Start-up that depends on the requests (vLLM's per-prompt image limit).

        Kept out of run() so that a failure to start is reported as such and
        throughput excludes start-up.
        """

    @abstractmethod
    def run(self, requests: Sequence[Request]) -> Iterator[EngineOutput]:
        """One submission: the requests together (they may be batched by the engine)."""

    def capture(self, request: Request) -> dict[str, Any]:
        """One forward of the request's prompt with hooks on the model (`harness.engines.capture.Recorder`):
        its arrays by stage, for a failing case's stage ladder. Only for the stages in `capabilities.stages`."""
        raise NotImplementedError(f"the {self.name} adapter cannot reach its model's internals")

    def close(self) -> None:
        """Release what start() acquired (a server process); called also when the run fails."""

    def info(self) -> dict[str, Any]:
        """Versions and settings for the run's provenance."""
        return {"engine": self.name, "model": self.settings.model, "dtype": self.settings.dtype,
                "device": self.settings.device}


def engine_names() -> list[str]:
    """Built-in and entry-point engine names (any `module:Class` is accepted too)."""
    return sorted({*BUILTIN_ENGINES, *(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))})


def resolve_engine(name: str) -> type[Engine]:
    """The adapter class for a built-in name, an entry-point name, or `module:Class`.

    Raises ValueError naming what was tried, so a typo is one clear line.
    """
    target = BUILTIN_ENGINES.get(name)
    if target is None:
        found = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == name]
        target = found[0].value if found else name
    module_name, sep, attr = target.partition(":")
    if not sep:
        raise ValueError(f"unknown engine {name!r}: use one of {', '.join(engine_names())} or module:Class")
    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"engine {name!r}: cannot load {target}: {type(exc).__name__}: {exc}") from exc
    if not (isinstance(cls, type) and issubclass(cls, Engine)):
        raise ValueError(f"engine {name!r}: {target} is not an Engine subclass")
    declared = cls.capabilities
    unknown = sorted(declared.features - set(FEATURES)) + sorted(declared.request_fields - set(REQUEST_FIELDS))
    if unknown:  # a misspelt name would skip every variant that asks for it, silently
        raise ValueError(f"engine {name!r}: {target} declares names no variant can use: {', '.join(unknown)} "
                         f"(features: {', '.join(FEATURES)}; request fields: {', '.join(REQUEST_FIELDS)})")
    if not cls.name:
        cls.name = name
    return cls
