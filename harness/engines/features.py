"""The vocabulary variants speak: engine features and request fields, each declared once.

A variant's `engine:` (and the top-level `engine:` of variants.yaml) names engine-neutral features;
its `request:` sets request fields. Everything else is derived from here: variants.yaml is checked
against it at load, `Request` takes its variant fields' defaults from it, the plan asks an engine to
declare the fields it lists as `declared`, each adapter maps the features it declares with a table
keyed by these names (`mapped`), and the variants.yaml header is `documented` from it (a test keeps
them equal). Below the adapters: it imports nothing of the harness.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _flag(value: Any) -> bool:
    return isinstance(value, bool)


def _texts(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(t, str) and t for t in value)


def _biases(value: Any) -> bool:
    """OpenAI's range: -100 (never) to 100 (always)."""
    return isinstance(value, dict) and bool(value) and all(
        isinstance(t, str) and t and isinstance(b, (int, float)) and not isinstance(b, bool) and -100 <= b <= 100
        for t, b in value.items())


@dataclass(frozen=True)
class Setting:
    """One name a variants file may use: how a value is written and what it means (the header's words), and
    the values it takes (`allowed`, where they are few, else `check`)."""

    name: str
    form: str
    meaning: str
    allowed: tuple[Any, ...] = ()
    check: Callable[[Any], bool] | None = None

    def problem(self, value: Any) -> str | None:
        """Why `value` is wrong for this setting, in one line; None when it is right."""
        ok = value in self.allowed if self.check is None else self.check(value)
        return None if ok else f"{self.name}: {value!r} is not {self.form} ({self.meaning})"


@dataclass(frozen=True)
class Feature(Setting):
    """An engine-neutral setting an adapter translates into its own options (`Capabilities.features`)."""


@dataclass(frozen=True)
class RequestField(Setting):
    """A field of `Request` by its default. `by_variant`: a variant's `request:` may set it (else the case
    does); `declared`: only an engine that lists it in `Capabilities.request_fields` is sent a value other
    than the default (the plan skips the variant elsewhere, with the reason)."""

    default: Any = None
    by_variant: bool = True
    declared: bool = False

    def problem(self, value: Any) -> str | None:
        if type(value) is type(self.default) and value == self.default:
            return None
        return super().problem(value)


def _choice(name: str, meaning: str, *allowed: str, default: Any, declared: bool = False) -> RequestField:
    """A request field that takes one of a few words (its form is their list)."""
    return RequestField(name, " | ".join(allowed), meaning, allowed, default=default, declared=declared)


FEATURES: dict[str, Feature] = {f.name: f for f in (
    Feature("prefill_chunk_tokens", "N | auto", "prefill split into N-token chunks (auto: splitting image spans)",
            check=lambda v: v == "auto" or _count(v)),
    Feature("prefix_caching", "bool", "the engine's prefix/multimodal caches", check=_flag),
    Feature("cache_block_tokens", "N", "tokens per KV-cache block (prefix hits are whole blocks)", check=_count),
    Feature("compiled", "bool", "captured (CUDA) or compiled (CPU) graphs instead of eager", check=_flag),
    Feature("speculative", "{method, ...}", "speculative decoding, as the engine's own config",
            check=lambda v: isinstance(v, dict) and isinstance(v.get("method"), str)),
    Feature("mm_embeds", "bool", "accept precomputed image embeddings", check=_flag),
    Feature("mm_cache_gb", "X", "size of the multimodal processor cache, in GB",
            check=lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0),
    Feature("max_model_len", "N", "the longest prompt + output the engine takes", check=_count),
)}

REQUEST_FIELDS: dict[str, RequestField] = {f.name: f for f in (
    RequestField("decoder", "NAME", "the registered decoder the harness decodes images with",
                 default="pil", check=lambda v: isinstance(v, str)),
    _choice("prompt_form", "the harness's prompt, or chat messages the engine renders",
            "rendered", "native", default="rendered"),
    _choice("image_input", "decoded pixels, file bytes, embeddings, processor output",
            "pixels", "bytes", "embeddings", "processor", default="pixels"),
    RequestField("sampling", "{temperature, top_p, top_k, seed}", "sampled instead of greedy",
                 check=lambda v: isinstance(v, dict) and set(v) <= {"temperature", "top_p", "top_k", "seed"}),
    RequestField("n", "N", "answers per request, each judged",
                 default=1, declared=True, check=_count),
    RequestField("stop", "{ignore_eos, strings, token_ids, tokens, min_tokens}", "where the output ends (default: "
                 "EOS ignored, max_new_tokens tokens)", default=None, declared=True,
                 check=lambda v: isinstance(v, dict) and set(v) <= {"ignore_eos", "strings", "token_ids", "tokens",
                                                                    "min_tokens"}),
    RequestField("penalties", "{presence, frequency, repetition}", "presence and frequency penalties (output "
                 "tokens), repetition penalty (prompt and output tokens)", default=None, declared=True,
                 check=lambda v: isinstance(v, dict) and set(v) <= {"presence", "frequency", "repetition"}),
    RequestField("logit_bias", "{TEXT: BIAS, ...}", "BIAS added to the logit of the first token of each TEXT (by the "
                 "model's tokenizer)", default={}, declared=True, check=_biases),
    RequestField("structured", "{choice: [TEXT, ...]}", "the answer constrained to one of the texts (structured "
                 "output)", default=None, declared=True,
                 check=lambda v: isinstance(v, dict) and set(v) == {"choice"} and _texts(v["choice"])),
    RequestField("detokenize", "{skip_special_tokens, spaces_between_special_tokens}", "how output ids become text",
                 default=None, declared=True, check=lambda v: isinstance(v, dict) and set(v) <= {
                     "skip_special_tokens", "spaces_between_special_tokens"}),
    _choice("submit", "with the other batched requests, or by itself",
            "batched", "alone", default="batched"),
    RequestField("repeats", "N", "sent N times in the same engine", default=1, check=_count),
    RequestField("mm_kwargs", "{...} | auto", "per-request processor options (auto: the model's)",
                 default={}, declared=True, check=lambda v: v == "auto" or isinstance(v, dict)),
    RequestField("prompt_logprobs", "bool", "false: the engine may read its prefix cache", default=True,
                 declared=True, check=_flag),
    _choice("warmup", "a request sent first with the same prompt",
            "other-image", "same-image", "over-long", default=None, declared=True),
    RequestField("videos", "frames", "the case's videos, each its frames' files", default=(), by_variant=False,
                 declared=True, check=lambda v: isinstance(v, tuple)),
)}

VARIANT_FIELDS = tuple(name for name, f in REQUEST_FIELDS.items() if f.by_variant)


def _unknown(kind: str, name: Any, known: Iterable[str]) -> str:
    return f"unknown {kind} {name!r} (known: {', '.join(known)})"


def feature_problem(settings: Any) -> str | None:
    """Why an `engine:` mapping is wrong (an unknown feature, a value it does not take); None when right."""
    if not isinstance(settings, dict):
        return f"must map features to values, got {settings!r}"
    for name, value in settings.items():
        if name not in FEATURES:
            return _unknown("feature", name, FEATURES)
        if problem := FEATURES[name].problem(value):
            return problem
    return None


def request_problem(values: Any) -> str | None:
    """Why a variant's `request:` mapping is wrong (an unknown field, one set by the case, a value it does not
    take); None when right."""
    if not isinstance(values, dict):
        return f"must map request fields to values, got {values!r}"
    for name, value in values.items():
        if name not in VARIANT_FIELDS:
            return _unknown("field", name, VARIANT_FIELDS)
        if problem := REQUEST_FIELDS[name].problem(value):
            return problem
    return None


def declared_fields(request: Mapping[str, Any]) -> list[str]:
    """The fields of a variant's `request:` an engine must declare it honours: those set away from their
    default."""
    return sorted(k for k, v in request.items() if k in REQUEST_FIELDS and REQUEST_FIELDS[k].declared
                  and v != REQUEST_FIELDS[k].default)


def mapped(table: Mapping[str, Callable[[Any], dict[str, Any]]], features: Mapping[str, Any],
           engine: str) -> dict[str, Any]:
    """An adapter's own options for `features`, by its table (feature -> its options for a value). A feature
    it has no entry for is a ValueError: the plan sends an engine only the features it declares."""
    options: dict[str, Any] = {}
    for name, value in features.items():
        if name not in table:
            raise ValueError(f"engine {engine!r} does not support the feature {name!r} (it takes: "
                             f"{', '.join(table) or 'none'})")
        options.update(table[name](value))
    return options


def _listed(settings: Iterable[Setting]) -> list[str]:
    rows = [(f"{s.name}: {s.form}", s.meaning) for s in settings]
    width = max(len(head) for head, _ in rows) + 3
    return [f"#   {head:<{width}}{meaning}" for head, meaning in rows]


def documented() -> str:
    """The vocabulary as the header of variants.yaml lists it, one setting a line (`name: form   meaning`):
    a test keeps the header equal to this."""
    return "\n".join([
        "# Engine features (`engine:`), declared in harness/engines/features.py (a test keeps this list equal):",
        *_listed(FEATURES.values()),
        "# Request fields (`request:`), declared there too:",
        *_listed(REQUEST_FIELDS[name] for name in VARIANT_FIELDS),
    ])
