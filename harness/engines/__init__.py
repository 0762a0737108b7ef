"""Engine adapters behind one interface, resolved by name or `module:Class`.

Nothing here imports a backend: the worker process imports only the adapter it
runs, and heavy imports (torch, transformers, vllm) happen when it starts.
"""
from harness.engines.base import (
    BUILTIN_ENGINES,
    Capabilities,
    Engine,
    EngineSettings,
    Request,
    Sampling,
    engine_names,
    resolve_engine,
)

__all__ = ["BUILTIN_ENGINES", "Capabilities", "Engine", "EngineSettings", "Request", "Sampling", "engine_names",
           "resolve_engine"]
