"""What a model computes on the way to its logits, captured with hooks on any torch model.

The same recorder serves the reference (transformers) and an engine that runs the model in its own process
(vLLM offline): both are `torch.nn.Module` trees with the same parts under different names, so the parts
are found by role, not by class: the method that turns processor output into image features
(`get_image_features` in transformers, `embed_multimodal` in vLLM), the projector inside or after the
vision tower, the decoder stack and its layers, the logits. Tokens are kept flat (positions x hidden): transformers
adds a batch dimension of 1, vLLM has none; a prompt computed in chunks is concatenated back.
"""
from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import numpy as np

# The stages of a case's ladder (`harness.judging.ladder.STAGES`) that an adapter's `capture` fills from
# hooks inside its model; an adapter declares those it reaches in `Capabilities.stages`.
CAPTURED = frozenset({"processor", "encoder", "features", "embeds", "positions", "layers", "logits"})


FEATURE_METHODS = ("get_image_features", "get_video_features", "embed_multimodal")
LOGITS_METHOD = "compute_logits"  # vLLM's: hidden states to logits (transformers returns them from forward)
# The module that maps the vision encoder's output to the language model's width: its input is the
# encoder's output (a per-architecture name, the same in both implementations).
PROJECTORS = ("merger", "multi_modal_projector", "connector")
VISION_WORDS = ("visual", "vision", "image")
# The vision tower's first module: its input is the processor's output as the model sees it (an engine that
# hands the model raw pixels and normalizes inside it has normalized them by then).
PATCH_EMBEDS = ("patch_embed", "patch_embedding")


def _array(value: Any) -> np.ndarray:
    """A tensor as float64 (bfloat16 has no numpy type) or int64."""
    t = value.detach().to("cpu")
    if t.is_floating_point():
        return t.float().numpy().astype(np.float64)
    return t.numpy().astype(np.int64)


def _rows(t: Any) -> np.ndarray:
    """A feature tensor as rows of its last dimension."""
    a = _array(t)
    return a.reshape(-1, a.shape[-1]) if a.ndim >= 2 else a.reshape(-1, 1)


def _items(value: Any) -> list[Any]:
    """The per-item tensors of an image-features result: a tensor, a list of them, or a ModelOutput."""
    import torch

    if isinstance(value, torch.Tensor):
        return [value]
    pooled = getattr(value, "pooler_output", None)
    if pooled is not None:
        return _items(pooled)
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _items(v)]
    return []


def decoder_layers(model: Any, num_layers: int | None = None) -> tuple[str, Any] | None:
    """The language model's decoder layers: a ModuleList named `layers` outside the vision tower (the one
    with `num_layers` entries where that is known)."""
    import torch

    found = [(name, m) for name, m in model.named_modules() if isinstance(m, torch.nn.ModuleList)
             and name.split(".")[-1] == "layers" and not any(w in name for w in VISION_WORDS)]
    sized = [(n, m) for n, m in found if num_layers is None or len(m) == num_layers]
    return (sized or found or [None])[0]  # type: ignore[return-value]


class Recorder:
    """Hooks on one model; `arrays()` after a forward gives what it saw, by stage key."""

    def __init__(self, model: Any, num_layers: int | None = None) -> None:
        self.model = model
        self._undo: list[Callable[[], None]] = []
        self._depth = 0
        self.clear()
        self._wrap_features()
        self._wrap_logits()
        patch = next((m for name, m in model.named_modules() if name.split(".")[-1] in PATCH_EMBEDS), None)
        if patch is not None:
            self._hook(patch.register_forward_pre_hook(self._input_as("processor.patches"), with_kwargs=True))
        for name, module in model.named_modules():
            if name.split(".")[-1] in PROJECTORS and not any(p in name.split(".")[:-1] for p in PROJECTORS):
                self._hook(module.register_forward_pre_hook(self._input_as("encoder"), with_kwargs=True))
        found = decoder_layers(model, num_layers)
        if found:
            path, layers = found
            # The decoder stack's own M-RoPE ids (transformers: its layers get text positions only); vLLM's
            # compiled stack may be called without its hooks, and its layers get the positions themselves.
            stack = model.get_submodule(path.rsplit(".", 1)[0]) if "." in path else model
            self._signatures = {id(stack): inspect.signature(stack.forward),
                                **{id(layer): inspect.signature(layer.forward) for layer in layers}}
            self._hook(stack.register_forward_pre_hook(self._stack_input, with_kwargs=True))
            self._hook(layers[0].register_forward_pre_hook(self._first_layer_input, with_kwargs=True))
            for i, layer in enumerate(layers):
                self._hook(layer.register_forward_pre_hook(self._layer_input, with_kwargs=True))
                self._hook(layer.register_forward_hook(self._layer_output(i), with_kwargs=True))

    def clear(self) -> None:
        self.seen: dict[str, list[np.ndarray]] = {}
        self._given: dict[int, tuple[Any, Any]] = {}  # decoder layer -> the hidden state given it, and its copy
        self.feature_rows: list[int] = []

    def _add(self, key: str, value: np.ndarray) -> None:
        self.seen.setdefault(key, []).append(value)

    def _hook(self, handle: Any) -> None:
        self._undo.append(handle.remove)

    def _wrap_features(self) -> None:
        """Wrap every image-features method; only the outermost call records (one may call another)."""
        for _, module in self.model.named_modules():
            for name in FEATURE_METHODS:
                method = getattr(module, name, None)
                if method is None or not callable(method):
                    continue
                module.__dict__[name] = self._recording(method)
                self._undo.append(lambda m=module, n=name: m.__dict__.pop(n, None))

    def _wrap_logits(self) -> None:
        """The logits at the last position computed: vLLM's `compute_logits`, else the model's output."""
        method = getattr(self.model, LOGITS_METHOD, None)
        if callable(method):
            def wrapped(*args: Any, **kwargs: Any) -> Any:
                result = method(*args, **kwargs)
                # One row: the sampled position of the one request. (With prompt logprobs vLLM also computes
                # the prompt's rows, positions 0 to n-2, in a call of its own.)
                if result is not None and getattr(result, "ndim", 0) == 2 and result.shape[0] == 1:
                    self.seen["logits"] = [_array(result[0])]
                return result

            self.model.__dict__[LOGITS_METHOD] = wrapped
            self._undo.append(lambda: self.model.__dict__.pop(LOGITS_METHOD, None))
            return

        def hook(module: Any, args: Any, output: Any) -> None:
            logits = getattr(output, "logits", None)
            if logits is not None:
                self.seen["logits"] = [_array(logits.reshape(-1, logits.shape[-1])[-1])]

        self._hook(self.model.register_forward_hook(hook))

    def _recording(self, method: Callable[..., Any]) -> Callable[..., Any]:
        signature = inspect.signature(method)
        import torch

        def wrapped(*args: Any, **kwargs: Any) -> Any:
            outer = self._depth == 0
            self._depth += 1
            try:
                result = method(*args, **kwargs)
            finally:
                self._depth -= 1
            if outer:
                try:
                    bound = signature.bind(*args, **kwargs).arguments
                except TypeError:
                    bound = kwargs
                named = {**{k: v for k, v in bound.items() if k != "kwargs"}, **bound.get("kwargs", {})}
                for key, value in named.items():
                    values = value if isinstance(value, (list, tuple)) else [value]
                    tensors = [v for v in values if isinstance(v, torch.Tensor)]
                    if tensors and len(tensors) == len(values):
                        self._add(f"processor.{key}", np.concatenate([_array(t).reshape(-1) for t in tensors]))
                items = _items(result)
                for item in items:
                    rows = _rows(item)
                    self.feature_rows.append(len(rows))
                    self._add("features", rows)
            return result

        return wrapped

    def _input_as(self, key: str) -> Callable[..., None]:
        """A pre-hook keeping a module's first input under `key`: flat for the processor's output (its layout
        differs between implementations), as rows for the encoder's."""
        def hook(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            value = args[0] if args else next(iter(kwargs.values()), None)
            if value is not None and hasattr(value, "detach"):
                self._add(key, _array(value).reshape(-1) if key.startswith("processor.") else _rows(value))

        return hook

    def _bound(self, module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        return self._signatures[id(module)].bind_partial(*args, **kwargs).arguments

    def _stack_input(self, module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        positions = self._bound(module, args, kwargs).get("position_ids")
        if positions is not None:
            self._add("positions", _positions(_array(positions)))

    def _first_layer_input(self, module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """The merged input embeddings are the first layer's input; vLLM's layers take the positions."""
        bound = self._bound(module, args, kwargs)
        if bound.get("hidden_states") is not None:
            self._add("embeds", _rows(bound["hidden_states"]))
        if bound.get("positions") is not None:  # per chunk when the engine prefills in chunks
            self._add("positions", _positions(_array(bound["positions"])))

    def _layer_input(self, module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """The hidden state a decoder layer is given, and a copy of its values (see `_layer_output`)."""
        hidden = self._bound(module, args, kwargs).get("hidden_states")
        if hasattr(hidden, "clone"):
            self._given[id(module)] = (hidden, hidden.detach().clone())

    def _layer_output(self, index: int) -> Callable[..., None]:
        def hook(module: Any, args: Any, kwargs: Any, output: Any) -> None:
            value = output
            given, before = self._given.pop(id(module), (None, None))
            if isinstance(output, (tuple, list)):  # vLLM keeps the residual apart: the layer's output is the sum
                value = output[0]
                residual = output[1] if len(output) > 1 else None
                # ... unless the layer handed its input hidden state back unchanged as the residual, having added
                # it in itself (vLLM's Cohere layers): then the first output is the whole hidden state already.
                # (Llama-style layers add in place into the residual they return: changed, so summed.)
                passed_through = residual is given and before is not None and bool((residual == before).all())
                if residual is not None and getattr(residual, "shape", None) == value.shape and not passed_through:
                    value = value + residual
            self._add(f"layer.{index}", _rows(value))

        return hook

    def arrays(self) -> dict[str, np.ndarray]:
        """Each stage's captures, concatenated along tokens (a prompt prefilled in chunks comes back whole)."""
        out = {key: np.concatenate(parts, axis=-1 if key == "positions" else 0) for key, parts in self.seen.items()}
        if self.feature_rows:
            out["features.rows"] = np.asarray(self.feature_rows, dtype=np.int64)
        return out

    def remove(self) -> None:
        for undo in reversed(self._undo):
            undo()
        self._undo.clear()


def _positions(a: np.ndarray) -> np.ndarray:
    """Positions as (axes, tokens): transformers' (3|4, 1, N) M-RoPE ids (a leading row of text positions
    dropped) or (1, N); vLLM's (3, N) or (N,)."""
    if a.ndim == 3:
        a = a[:, 0, :]
        if a.shape[0] == 4:
            a = a[1:]
    return a.reshape(1, -1) if a.ndim == 1 else a
