"""Engine adapters behind one interface. Each module registers itself; heavy
imports (torch, transformers, vllm) happen only when an engine is started."""
from harness.engines import hf, vllm_offline  # noqa: F401 - registration
from harness.engines.base import ENGINES, Engine, EngineSettings, Request

__all__ = ["ENGINES", "Engine", "EngineSettings", "Request"]
