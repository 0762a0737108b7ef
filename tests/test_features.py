"""The vocabulary of engine features and request fields (harness/engines/features.py): every place that names
them agrees with it, and a value outside it is refused (no engine is started)."""
from __future__ import annotations

import re
from dataclasses import fields
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from harness.engines.base import BUILTIN_ENGINES, Capabilities, Engine, Request, resolve_engine
from harness.engines.features import (
    FEATURES,
    REQUEST_FIELDS,
    VARIANT_FIELDS,
    declared_fields,
    documented,
    feature_problem,
    mapped,
    request_problem,
)
from harness.engines.sglang_offline import FEATURE_ARGS
from harness.engines.vllm_offline import FEATURE_OPTIONS
from tests.conftest import FAKE

README = Path(__file__).resolve().parents[1] / "README.md"


class MisspeltEngine(Engine):
    """An adapter declaring a feature no variant can name (the old SGLang `cuda_graphs`)."""

    capabilities = Capabilities(features=frozenset({"cuda_graphs"}))

    def run(self, requests: Any) -> Any:  # never started
        return iter(())


@pytest.mark.parametrize("name", [*BUILTIN_ENGINES, FAKE])
def test_every_adapter_declares_only_names_of_the_vocabulary(name: str) -> None:
    capabilities = resolve_engine(name).capabilities
    assert capabilities.features <= set(FEATURES)
    assert capabilities.request_fields <= set(REQUEST_FIELDS)


def test_an_adapter_declaring_an_unknown_feature_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match=r"declares names no variant can use: cuda_graphs \(features: "):
        resolve_engine("tests.test_features:MisspeltEngine")


def test_request_defaults_are_the_vocabulary_defaults() -> None:
    defaults = {f.name: f.default_factory() if callable(f.default_factory) else f.default for f in fields(Request)}
    assert {name: defaults[name] for name in REQUEST_FIELDS} == {n: f.default for n, f in REQUEST_FIELDS.items()}
    assert "videos" in REQUEST_FIELDS and "videos" not in VARIANT_FIELDS  # set by the case, never by a variant


@pytest.mark.parametrize("table", [FEATURE_OPTIONS, FEATURE_ARGS], ids=["vllm", "sglang"])
def test_adapter_tables_map_features_of_the_vocabulary(table) -> None:
    assert set(table) <= set(FEATURES)
    with pytest.raises(ValueError, match=r"engine 'e' does not support the feature 'nope'"):
        mapped(table, {"nope": 1}, "e")


def test_vllm_maps_every_feature_to_its_options() -> None:
    options = mapped(FEATURE_OPTIONS, {"prefill_chunk_tokens": 32, "prefix_caching": False, "cache_block_tokens": 16,
                                       "compiled": True, "mm_cache_gb": 0.5, "max_model_len": 2048,
                                       "speculative": {"method": "ngram"}, "mm_embeds": True}, "vllm")
    assert options == {"enable_chunked_prefill": True, "max_num_batched_tokens": 32, "max_num_seqs": 32,
                       "enable_prefix_caching": False, "block_size": 16, "enforce_eager": False,
                       "mm_processor_cache_gb": 0.5, "max_model_len": 2048, "speculative_config": {"method": "ngram"},
                       "enable_mm_embeds": True}
    assert set(FEATURE_OPTIONS) == set(FEATURES)  # vLLM takes every feature


def test_the_variants_header_is_the_vocabulary() -> None:
    header = resources.files("harness.config").joinpath("variants.yaml").read_text()
    assert documented() in header
    for name in [*FEATURES, *VARIANT_FIELDS]:
        assert f"#   {name}: " in documented()


def test_the_readme_names_only_features_of_the_vocabulary() -> None:
    text = " ".join(README.read_text().split())
    listed = re.search(r"engine-neutral features each adapter translates \(((?:`\w+`, )+)\.\.\.\)", text)
    assert listed, "the README's sentence listing engine features moved: update this test"
    names = re.findall(r"`(\w+)`", listed.group(1))
    assert len(names) >= 3 and set(names) <= set(FEATURES), names
    assert "cuda_graphs" not in text


@pytest.mark.parametrize(("settings", "problem"), [
    ({"prefill_chunk_tokens": "auto", "compiled": True, "mm_cache_gb": 0.0001}, None),
    ({"compiled": "yes"}, "compiled: 'yes' is not bool"),
    ({"cache_block_tokens": 0}, "cache_block_tokens: 0 is not N"),
    ({"speculative": {"num_speculative_tokens": 3}}, "speculative: {'num_speculative_tokens': 3} is not {method, ...}"),
    ({"cuda_graphs": True}, "unknown feature 'cuda_graphs' (known: prefill_chunk_tokens, prefix_caching"),
    (["compiled"], "must map features to values"),
])
def test_feature_values_are_checked(settings, problem) -> None:
    found = feature_problem(settings)
    assert found == problem if problem is None else found.startswith(problem)


@pytest.mark.parametrize(("values", "problem"), [
    ({"submit": "alone", "repeats": 2, "warmup": "over-long", "mm_kwargs": "auto", "prompt_logprobs": False}, None),
    ({"warmup": None, "prompt_logprobs": True, "mm_kwargs": {}}, None),  # the defaults themselves
    ({"repeats": 0}, "repeats: 0 is not N"),
    ({"prompt_logprobs": 1}, "prompt_logprobs: 1 is not bool"),
    ({"image_input": "flat-grey"}, "image_input: 'flat-grey' is not pixels | bytes | embeddings | processor"),
    ({"warmup": "cold"}, "warmup: 'cold' is not other-image | same-image | over-long"),
])
def test_request_values_are_checked(values, problem) -> None:
    found = request_problem(values)
    assert found == problem if problem is None else found.startswith(problem)


def test_declared_fields_are_those_set_away_from_their_default() -> None:
    assert declared_fields({"mm_kwargs": {}, "prompt_logprobs": True, "warmup": None, "submit": "alone"}) == []
    assert declared_fields({"mm_kwargs": "auto", "prompt_logprobs": False, "warmup": "same-image"}) == [
        "mm_kwargs", "prompt_logprobs", "warmup"]
