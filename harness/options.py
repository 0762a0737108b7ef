"""The run options, declared once for both `vlm-parity run` and the pytest plugin.

Each option is added to argparse as `--NAME` and to pytest as `--parity-NAME`
(as pytest-benchmark does with its prefix), and one function builds the
RunConfig from either, so the two front ends cannot drift.
"""
from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from harness.decode import DECODERS
from harness.engines import engine_names
from harness.runner import REFERENCE_MODES, RunConfig

DTYPES = ("float32", "bfloat16", "float16")
DEFAULT_CASES = Path("cases")
DEFAULT_OUT = Path("reports/latest")


def parse_engine_option(text: str) -> tuple[str, Any]:
    """KEY=VALUE, VALUE parsed as YAML so numbers and booleans keep their type."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, yaml.safe_load(value)


def parse_shard(text: str) -> tuple[int, int]:
    """I/N with 1 <= I <= N."""
    index, sep, total = text.partition("/")
    if not (sep and index.isdigit() and total.isdigit() and 1 <= int(index) <= int(total)):
        raise argparse.ArgumentTypeError(f"expected I/N with 1 <= I <= N, got {text!r}")
    return int(index), int(total)


def comma_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


@dataclass(frozen=True)
class Option:
    """One run option: its name without prefix and its argparse keyword arguments."""

    name: str
    kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def dest(self) -> str:
        return self.name.replace("-", "_")


RUN_OPTIONS = (
    Option("engine", {"default": "vllm", "help": f"engine under test: {', '.join(engine_names())} or module:Class"}),
    Option("model", {"help": "checkpoint (folder or hub id) or built-in model name the engine serves "
                             "(default: the built-in tiny model)"}),
    Option("reference-model", {"help": "checkpoint the reference loads (default: --model)"}),
    Option("engine-url", {"metavar": "URL", "help": "attach a server engine to this running server (never stopped by "
                                                    "the harness) instead of starting one"}),
    Option("reference-engine", {"default": "hf", "help": "the reference engine (default: hf)"}),
    Option("reference", {"default": "auto", "choices": REFERENCE_MODES,
                         "help": "live: run the reference; stored: only recorded references (`vlm-parity record`), "
                                 "a stale or missing one is an error naming what changed; auto: stored where fresh, "
                                 "else live with a warning (default: auto)"}),
    Option("overlap", {"default": "auto", "choices": ("auto", "on", "off"),
                       "help": "start the engine groups while the reference runs: auto = when every side is on the "
                               "CPU; on a GPU two processes would hold its memory at once, so there it is opt-in"}),
    Option("references-dir", {"type": Path, "metavar": "DIR",
                              "help": "stored references root (default: the project's references/)"}),
    Option("cases", {"type": Path, "nargs": "+", "help": "case YAML files or folders (default: cases/)"}),
    Option("out", {"type": Path, "help": "folder for results.json and index.html (default: reports/latest)"}),
    Option("dtype", {"default": "float32", "choices": DTYPES, "help": "the engine's dtype"}),
    Option("reference-dtype", {"choices": DTYPES, "help": "the reference's dtype (default: --dtype)"}),
    Option("device", {"default": "cpu", "help": "cpu or cuda, for the engine"}),
    Option("reference-device", {"help": "the reference's device (default: --device)"}),
    Option("engine-option", {"type": parse_engine_option, "action": "append", "default": [], "metavar": "KEY=VALUE",
                             "help": "passed to the engine's constructor, e.g. enforce_eager=false (repeatable)"}),
    Option("variants", {"type": comma_list, "metavar": "NAME,...",
                        "help": "variants to run (harness/config/variants.yaml): names, or base, default, all "
                                "(default: default)"}),
    Option("variants-file", {"type": Path, "action": "append", "default": [], "metavar": "YAML",
                             "help": "extra variants file; its entries add to or replace the packaged ones"}),
    Option("decoder", {"default": "pil", "choices": sorted(DECODERS),
                       "help": "decoder for the engine's images (the reference uses pil)"}),
    Option("decode-effect", {"metavar": "DECODER", "choices": sorted(DECODERS),
                             "help": "add the decoder-DECODER variant: the engine fed that decoder's pixels"}),
    Option("shard", {"type": parse_shard, "metavar": "I/N",
                     "help": "run the I-th of N deterministic slices of the cases (CI matrix; merge with "
                             "`vlm-parity merge`)"}),
    Option("thresholds", {"type": Path, "help": "thresholds YAML layered over the packaged one (per dtype, per model glob)"}),
    Option("top-k", {"type": int, "default": 5, "help": "top-k candidates compared per position (default: 5)"}),
    Option("stall-timeout", {"type": float, "default": 600.0, "metavar": "SECONDS",
                             "help": "the per-case timeout: stop an engine that returns nothing for this long; the "
                                     "cases it was running are errors and a fresh engine runs the rest (default: 600; "
                                     "HTTP engines also take --engine-option request_timeout=SECONDS per request)"}),
    Option("engine-restarts", {"type": int, "default": 2, "metavar": "N",
                               "help": "fresh engines per engine group after one dies, stalls or breaks mid-run; the "
                                       "cases in flight are errors, never re-sent (default: 2)"}),
    Option("run-timeout", {"type": float, "metavar": "SECONDS",
                           "help": "the per-run timeout: past it the engine is stopped and every case not yet "
                                   "returned is an error (default: none)"}),
    Option("history", {"type": Path, "help": "JSON-lines history to append this run to (nightly trends)"}),
    Option("policy", {"default": "default", "help": "gate policy from the gate config (default: default)"}),
    Option("gate-config", {"type": Path, "help": "gate YAML (default: the packaged one)"}),
)


def add_options(add: Callable[..., Any], prefix: str = "") -> None:
    """Declare every run option through `add` (argparse's add_argument or pytest's addoption)."""
    for option in RUN_OPTIONS:
        add(f"--{prefix}{option.name}", dest=f"{prefix.replace('-', '_')}{option.dest}", **option.kwargs)


def run_config(get: Callable[[str], Any], only: set[str] | None = None, root: Path = Path(".")) -> RunConfig:
    """The RunConfig from option values; `get(dest)` reads one (without prefix)."""
    return RunConfig(
        cases=get("cases") or [root / DEFAULT_CASES], out=get("out") or root / DEFAULT_OUT, engine=get("engine"),
        model=get("model"), engine_url=get("engine_url"), reference_model=get("reference_model"),
        reference_engine=get("reference_engine"),
        dtype=get("dtype"), reference_dtype=get("reference_dtype"), device=get("device"),
        reference_device=get("reference_device"), engine_options=dict(get("engine_option")),
        variants=get("variants"), variants_files=list(get("variants_file")), decoder=get("decoder"),
        decode_effect=get("decode_effect"), thresholds_file=get("thresholds"), top_k=get("top_k"), only=only,
        shard=get("shard"), stall_s=get("stall_timeout"),
        engine_restarts=get("engine_restarts"), run_timeout_s=get("run_timeout"), reference=get("reference"),
        references_dir=get("references_dir"), overlap=get("overlap"),
    )
