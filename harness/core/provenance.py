"""Where a run's results came from: one typed record, written once per stage of the run.

Every renderer and the history read these attributes; a misspelt one is an AttributeError, not a
silent None. Results files written before this record existed (a plain dict) still load: unknown
keys are ignored and missing ones take their defaults (`harness.core.schema.from_dict`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class EngineGroupInfo:
    """One engine start of the run: the variants it served and how it went."""

    variants: list[str] = field(default_factory=list)
    features: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    dtype: str = ""
    requests: int = 0
    run_s: float | None = None
    fatal: str | None = None
    restarts: int = 0
    faults: list[str] = field(default_factory=list)


@dataclass
class Provenance:
    """The run's configuration, the versions and hardware that computed it, and how its engines fared."""

    harness_version: str = ""
    git_commit: str | None = None
    date: str = ""
    engine: str = ""
    engine_version: str | None = None
    model: str = ""
    model_name: str = ""
    model_sha256: str | None = None
    reference_engine: str = "hf"
    reference_model: str = ""
    reference_model_sha256: str | None = None
    dtype: str = "float32"
    reference_dtype: str = "float32"
    device: str = "cpu"
    decoder: str = "pil"
    engine_options: dict[str, Any] = field(default_factory=dict)
    base_variant: str = "batched"
    capabilities: dict[str, Any] = field(default_factory=dict)
    cases: list[str] = field(default_factory=list)
    thresholds: dict[str, Any] = field(default_factory=dict)  # {"values": ..., "reasons": ...} in force
    hardware: dict[str, Any] = field(default_factory=dict)  # the harness's machine (harness.core.hardware.cpu)
    # What the plan decided.
    partial: bool = False  # a --case / -k subset: no baseline for the nightly history
    shard: list[int] | None = None  # [i, n] of a --shard run
    plan_cases: list[str] = field(default_factory=list)  # a shard's cases, for merge
    overlap: bool = False
    reference_mode: str = "auto"
    references_dir: str = ""
    references_stored: int = 0
    references_live: int = 0
    # What the engines said about themselves, and how they ran.
    reference_info: dict[str, Any] = field(default_factory=dict)
    engine_info: dict[str, Any] = field(default_factory=dict)
    engine_run_s: float | None = None
    throughput_tok_s: float | None = None
    engine_groups: list[EngineGroupInfo] = field(default_factory=list)
    reference_restarts: int = 0
    reference_faults: list[str] = field(default_factory=list)
    stage_s: dict[str, float] = field(default_factory=dict)
    merged_from: list[str] = field(default_factory=list)  # a merged run's shard results files
