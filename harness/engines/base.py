"""The one engine interface, the request every engine receives, and the registry."""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from harness.schema import EngineOutput


@dataclass(frozen=True)
class Request:
    """One case as an engine sees it: the prompt is rendered once by the runner
    and every engine gets the same text, so tokenization is the engine's own."""

    case_id: str
    prompt_text: str
    images: tuple[str, ...] = ()
    decoder: str = "pil"
    max_new_tokens: int = 16

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Request:
        return cls(d["case_id"], d["prompt_text"], tuple(d.get("images", ())), d.get("decoder", "pil"),
                   int(d.get("max_new_tokens", 16)))


@dataclass(frozen=True)
class EngineSettings:
    """How to start an engine. `options` are engine-specific (e.g. vLLM's
    `enforce_eager`), passed through so engine variants need no new code."""

    model: str
    dtype: str = "float32"
    device: str = "cpu"
    top_k: int = 5
    seed: int = 0
    options: dict[str, Any] = field(default_factory=dict)


class Engine(ABC):
    """Constructed and started once, then given all requests; yields one
    EngineOutput per request.

    A request that fails yields an output with `error` set; only a failure to
    start the engine raises.
    """

    name: ClassVar[str]

    def __init__(self, settings: EngineSettings) -> None:
        self.settings = settings

    def start(self, requests: Sequence[Request]) -> None:
        """Start-up that depends on the requests (vLLM's per-prompt image limit).

        Kept out of run() so that a failure to start is reported as such and
        throughput excludes start-up.
        """

    @abstractmethod
    def run(self, requests: Sequence[Request]) -> Iterator[EngineOutput]: ...

    def info(self) -> dict[str, Any]:
        """Versions and settings for the run's provenance."""
        return {"engine": self.name, "model": self.settings.model, "dtype": self.settings.dtype,
                "device": self.settings.device}


ENGINES: dict[str, type[Engine]] = {}


def register(name: str) -> Callable[[type[Engine]], type[Engine]]:
    def add(cls: type[Engine]) -> type[Engine]:
        cls.name = name
        ENGINES[name] = cls
        return cls
    return add
