"""Variants: the paths a run takes through the engine, as data.

A variant is a path through the engine: engine-setting overrides (engine-neutral
`features`, raw `engine_options`, dtype), request overrides (decoder, prompt form,
image input, sampling, submission, repeats), what it is judged against (the
reference, the engine's own base variant, or both) and which comparisons apply.
Variants are declared in `harness/config/variants.yaml` (plus any
`--variants-file`); `decoder-<name>` exists for every registered decoder. Each
field is declared once, on `Variant`, with the YAML key it is read from.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from harness.config import ConfigError
from harness.engines.base import Detokenize, Penalties, Sampling, Stop, Structured
from harness.engines.features import feature_problem, request_problem
from harness.inputs.decode import DECODERS

AGAINST = ("reference", "base")
CHECKS = ("prefill", "decode")
CASE_FILTERS = ("all", "images")
DECODER_PREFIX = "decoder-"


def _key(yaml_key: str | None = None, **kwargs: Any) -> Any:
    """A Variant field read from `yaml_key` in variants.yaml (default: the field's name)."""
    return field(metadata={"yaml": yaml_key}, **kwargs)


@dataclass(frozen=True)
class Variant:
    """One path through the engine, and why it exists."""

    name: str
    reason: str = _key(default="")
    diagnosis: str = _key(default="")  # what it means when only this variant fails
    features: dict[str, Any] = _key("engine", default_factory=dict)
    engine_options: dict[str, Any] = _key(default_factory=dict)
    dtype: str | None = _key(default=None)
    request: dict[str, Any] = _key(default_factory=dict)
    # The reference it is compared with: decoding with another decoder than PIL, with the same per-request
    # processor options as the engine, or with some of the variant's own request fields (`reference: {decoder:
    # NAME}` / `{mm_kwargs: auto}` / `{same: [penalties]}` in variants.yaml).
    reference_decoder: str = _key("reference", default="pil")
    reference_mm: bool = False
    reference_same: tuple[str, ...] = ()  # `{same: [fields]}`: the reference re-run with these request fields
    against: tuple[str, ...] = _key(default=("reference",))
    checks: tuple[str, ...] = _key(default=CHECKS)
    cases: str = _key(default="all")
    requires: dict[str, Any] = _key(default_factory=dict)
    expect: dict[str, Any] = _key(default_factory=dict)  # {cache_hit: true}: warn when the path was not taken

    def describe(self) -> dict[str, Any]:
        """What the report and results say about the variant."""
        return asdict(self)

    @property
    def sampled(self) -> bool:
        """Its answers are drawn, not greedy (temperature above 0 without top-k 1): the reference scores each
        one's tokens (`scored_name`) instead of comparing it with its own greedy answer."""
        sampling = self.request.get("sampling")
        return sampling is not None and sampling.temperature > 0 and sampling.top_k != 1

    @property
    def answers(self) -> int:
        """Answers a case on this variant gets: each repeat, and the other n - 1 of the first one's request."""
        return self.request.get("repeats", 1) + self.request.get("n", 1) - 1


# The keys of a variant in variants.yaml: derived, never listed twice (its `engine:` and `request:` keys are
# the vocabulary's, harness.engines.features).
VARIANT_KEYS = tuple(f.metadata["yaml"] or f.name for f in fields(Variant) if "yaml" in f.metadata)


@dataclass(frozen=True)
class VariantSet:
    """Every declared variant, the base one, and the profiles: named selections (`default`: what the README's
    run and `pytest -m parity` take; `nightly`: everything, the slow paths too)."""

    variants: dict[str, Variant]
    base: str
    profiles: dict[str, tuple[str, ...]]
    engine: dict[str, Any] = field(default_factory=dict)  # engine-neutral settings every variant starts from

    def get(self, name: str) -> Variant:
        if name in self.variants:
            return self.variants[name]
        if name.startswith(DECODER_PREFIX) and name[len(DECODER_PREFIX):] in DECODERS:
            return decoder_variant(name[len(DECODER_PREFIX):])
        known = [*self.variants, *(DECODER_PREFIX + d for d in DECODERS)]
        raise ValueError(f"unknown variant {name!r} (known: {', '.join(known)}; also: base, all, and the profiles "
                         f"{', '.join(self.profiles)})")

    def select(self, names: Sequence[str] | None) -> list[Variant]:
        """The variants to run, in declaration order, base first. `base` names the base
        variant, a profile's name its variants, `all` every declared one; a variant judged
        against the base brings the base in."""
        wanted: list[str] = []
        for name in names or ["default"]:
            if name in self.profiles:
                wanted += self.profiles[name]
            elif name == "all":
                wanted += list(self.variants)
            else:
                wanted.append(self.base if name == "base" else name)
        chosen = {n: self.get(n) for n in dict.fromkeys(wanted)}
        if any("base" in v.against for v in chosen.values()):
            chosen.setdefault(self.base, self.get(self.base))
        order = [self.base, *self.variants]
        return sorted(chosen.values(), key=lambda v: order.index(v.name) if v.name in order else len(order))


RERUN_PREFIX = "reference-"  # the reference's re-runs with other pixels or processor options


def rerun_name(what: str) -> str:
    """The request variant of the reference re-run with `what` (a decoder's name, or `options`)."""
    return RERUN_PREFIX + what


def rerun_floor_name(run: str, rerun: str) -> str:
    """The request variant of floor run `run` done on re-run `rerun` (its own prompt: its own floor)."""
    return f"{run}|{rerun}"


def scored_name(variant: str, answer: int) -> str:
    """The request variant of the reference scoring answer `answer` (0-based: repeats, then the other n - 1
    of the first) of a sampled variant."""
    return f"scored-{variant}.{answer}"


def reference_key(variant: Variant) -> str:
    """The request variant of the reference this variant is compared with."""
    if variant.reference_same:
        return rerun_name(variant.name)
    if variant.reference_mm:
        return rerun_name("options")
    return "reference" if variant.reference_decoder == "pil" else rerun_name(variant.reference_decoder)


def decoder_variant(decoder: str) -> Variant:
    """The engine fed `decoder`'s pixels while the reference keeps PIL's: what a
    decode-path difference does to parity (`--decode-effect`)."""
    return Variant(
        name=DECODER_PREFIX + decoder,
        reason=f"the engine decodes images with {decoder} instead of PIL (the reference keeps PIL): "
               "shows what a decode-path difference does to logprobs and outputs",
        diagnosis=f"fails only with {decoder} pixels",
        request={"decoder": decoder}, against=("reference",), cases="images",
    )


def load_variants(extra: Sequence[Path] = ()) -> VariantSet:
    """The packaged variants.yaml, then each extra file (whose entries add or replace by name).

    Raises ValueError naming the file, the variant and the field."""
    docs = [("harness/config/variants.yaml",
             resources.files("harness.config").joinpath("variants.yaml").read_text())]
    for path in extra:
        try:
            docs.append((str(path), Path(path).read_text()))
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read variants file: {exc.strerror}") from exc
    variants: dict[str, Variant] = {}
    base, profiles, engine = "", {}, {}
    for source, text in docs:
        try:
            doc = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{source}: not valid YAML: {exc}") from exc
        if not isinstance(doc, dict) or not isinstance(doc.get("variants", {}), dict):
            raise ConfigError(f"{source}: must be a mapping with a 'variants' mapping")
        unknown = set(doc) - {"variants", "base", "profiles", "engine"}
        if unknown:
            raise ConfigError(f"{source}: unknown top-level keys: {', '.join(sorted(unknown))}")
        for name, spec in (doc.get("variants") or {}).items():
            variants[name] = _parse_variant(source, str(name), spec)
        base = doc.get("base", base)
        if problem := feature_problem(doc.get("engine") or {}):
            raise ConfigError(f"{source}: engine: {problem}")
        engine.update(doc.get("engine") or {})
        if not isinstance(doc.get("profiles", {}), dict):
            raise ConfigError(f"{source}: field 'profiles': must map a profile name to a list of variants")
        profiles.update({str(k): tuple(v or ()) for k, v in (doc.get("profiles") or {}).items()})
    for profile, names in {"base": (base,), **profiles}.items():
        for name in names:
            if name not in variants:
                raise ConfigError(f"variants: profile {profile!r} names unknown variant {name!r}")
    if "default" not in profiles:
        raise ConfigError("variants: no 'default' profile")
    return VariantSet(variants, base, profiles, engine)


# Request fields whose value is a mapping of settings, as the dataclass the adapters read.
SETTINGS_CLASSES: dict[str, type] = {"sampling": Sampling, "stop": Stop, "detokenize": Detokenize,
                                     "penalties": Penalties, "structured": Structured}


def _parse_variant(source: str, name: str, spec: Any) -> Variant:
    where = f"{source}: variant {name!r}"
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: must be a mapping")
    unknown = set(spec) - set(VARIANT_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown fields: {', '.join(sorted(unknown))} (known: {', '.join(VARIANT_KEYS)})")
    if not isinstance(spec.get("reason"), str) or not spec["reason"].strip():
        raise ConfigError(f"{where}: field 'reason': every variant says why it exists")
    if problem := feature_problem(spec.get("engine") or {}):
        raise ConfigError(f"{where}: engine: {problem}")
    if problem := request_problem(spec.get("request") or {}):
        raise ConfigError(f"{where}: request: {problem}")
    request = dict(spec.get("request") or {})
    if "decoder" in request and request["decoder"] not in DECODERS:
        raise ConfigError(f"{where}: request: decoder: unknown decoder {request['decoder']!r} "
                         f"(known: {', '.join(DECODERS)})")
    for key, kind in SETTINGS_CLASSES.items():  # the request fields that are settings of their own
        if key in request:
            try:
                request[key] = kind(**{k: tuple(v) if isinstance(v, list) else v for k, v in request[key].items()})
            except TypeError as exc:
                raise ConfigError(f"{where}: request: {key}: {exc}") from exc
    against = tuple(spec.get("against", ["reference"]))
    checks = tuple(spec.get("checks", list(CHECKS)))
    for key, values, allowed in (("against", against, AGAINST), ("checks", checks, CHECKS)):
        if not values or not set(values) <= set(allowed):
            raise ConfigError(f"{where}: field {key!r}: must be a non-empty list of {', '.join(allowed)}")
    reference = dict(spec.get("reference") or {})
    same = reference.get("same", [])
    if set(reference) - {"decoder", "mm_kwargs", "same"} or reference.get("decoder", "pil") not in DECODERS \
            or reference.get("mm_kwargs", "auto") != "auto" or not isinstance(same, list) \
            or not set(same) <= set(request) - {"decoder", "mm_kwargs"}:
        raise ConfigError(f"{where}: field 'reference': {{decoder: NAME}} with a registered decoder, "
                         "{mm_kwargs: auto}, or {same: [FIELD, ...]} naming request fields the variant sets")
    if spec.get("cases", "all") not in CASE_FILTERS:
        raise ConfigError(f"{where}: field 'cases': must be one of {', '.join(CASE_FILTERS)}")
    if set(spec.get("expect") or {}) - {"cache_hit"}:
        raise ConfigError(f"{where}: field 'expect': only {{cache_hit: true}}")
    return Variant(name=name, reason=spec["reason"].strip(), diagnosis=spec.get("diagnosis", ""), features=dict(spec.get("engine") or {}),
                   engine_options=dict(spec.get("engine_options") or {}), dtype=spec.get("dtype"), request=request,
                   reference_decoder=reference.get("decoder", "pil"), reference_mm="mm_kwargs" in reference,
                   reference_same=tuple(same),
                   against=against, checks=checks, cases=spec.get("cases", "all"),
                   requires=dict(spec.get("requires") or {}), expect=dict(spec.get("expect") or {}))
