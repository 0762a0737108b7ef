"""The run options, declared once: each is a `RunConfig` field whose metadata says how a front end
spells it. `vlm-parity run` adds them as `--NAME`, the pytest plugin as `--parity-NAME` (as
pytest-benchmark does with its prefix), `record` and `bench` take the ones they share, and one
function builds the config from any of them, so no front end can drift from another.
"""
from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from harness.engines import engine_names
from harness.inputs.decode import DECODERS

DTYPES = ("float32", "bfloat16", "float16")
REFERENCE_MODES = ("live", "stored", "auto")
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


def option(default: Any = None, help: str = "", *, flag: str | None = None, convert: Callable[[Any], Any] | None = None,
           fronts: tuple[str, ...] = ("cli", "pytest"), factory: Callable[[], Any] | None = None,
           aliases: tuple[str, ...] = (), **argparse_kwargs: Any) -> Any:
    """A config field that is a command-line option: `flag` (default: the field name with dashes), argparse's
    keyword arguments, `convert` from the parsed value to the field's (a list of pairs to a dict), the
    front ends that offer it ("cli", "pytest"), and short `aliases` for the unprefixed command line."""
    meta = {"option": {"flag": flag, "help": help, "convert": convert, "fronts": fronts, "argparse": argparse_kwargs,
                       "aliases": aliases}}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class RunConfig:
    """Everything a run needs; the CLI and the pytest plugin both build one from the options below."""

    cases: list[Path] = option(help="case YAML files or folders (default: cases/)", type=Path, nargs="+",
                               factory=list)
    out: Path = option(DEFAULT_OUT, "folder for results.json and index.html (default: reports/latest)", type=Path)
    engine: str = option("vllm", f"engine under test: {', '.join(engine_names())} or module:Class")
    model: str | None = option(help="checkpoint (folder or hub id) or built-in model name the engine serves "
                                    "(default: the built-in tiny model); `all`: every built-in architecture, "
                                    "one run each under --out (`vlm-parity models` lists them)")
    engine_url: str | None = option(help="attach a server engine to this running server (never stopped by the "
                                         "harness) instead of starting one", metavar="URL")
    reference_model: str | None = option(help="checkpoint the reference loads (default: --model)")
    reference_engine: str = option("hf", "the reference engine (default: hf)")
    dtype: str = option("float32", "the engine's dtype", choices=DTYPES)
    reference_dtype: str | None = option(help="the reference's dtype (default: --dtype)", choices=DTYPES)
    device: str = option("cpu", "cpu or cuda, for the engine")
    reference_device: str | None = option(help="the reference's device (default: --device)")
    decoder: str = option("pil", "decoder for the engine's images (the reference uses pil)", choices=sorted(DECODERS))
    decode_effect: str | None = option(help="add the decoder-DECODER variant: the engine fed that decoder's pixels",
                                       metavar="DECODER", choices=sorted(DECODERS))
    profile: str = option("default", "the set of variants to run, a profile of harness/config/variants.yaml: default "
                                     "(what CI runs) or nightly (every path, the slow ones too)")
    variants: list[str] | None = option(help="variants to run instead of the profile's (harness/config/"
                                             "variants.yaml): names, or base, a profile's name, all",
                                        type=comma_list, metavar="NAME,...")
    variants_files: list[Path] = option(help="extra variants file; its entries add to or replace the packaged ones",
                                        flag="variants-file", type=Path, action="append", metavar="YAML",
                                        factory=list)
    engine_options: dict[str, Any] = option(help="passed to the engine's constructor, e.g. enforce_eager=false "
                                                 "(repeatable)", flag="engine-option", type=parse_engine_option,
                                            action="append", metavar="KEY=VALUE", convert=dict, factory=dict)
    thresholds_file: Path | None = option(help="thresholds YAML layered over the packaged one (per dtype, per model "
                                               "glob)", flag="thresholds", type=Path)
    only: set[str] | None = option(help="run only this case (repeatable)", flag="case", action="append",
                                   metavar="ID", convert=set, fronts=("cli",))
    top_k: int = option(5, "top-k candidates compared per position (default: 5)", type=int)
    shard: tuple[int, int] | None = option(help="run the I-th of N deterministic slices of the cases (CI matrix; "
                                                "merge with `vlm-parity merge`)", type=parse_shard, metavar="I/N")
    stall_s: float = option(600.0, "the per-case timeout: stop an engine that returns nothing for this long; the cases "
                                   "it was running are errors and a fresh engine runs the rest (default: 600; HTTP "
                                   "engines also take --engine-option request_timeout=SECONDS per request)",
                            flag="stall-timeout", type=float, metavar="SECONDS")
    engine_restarts: int = option(2, "fresh engines per engine group after one dies, stalls or breaks mid-run; the "
                                     "cases in flight are errors, never re-sent (default: 2)", type=int, metavar="N")
    run_timeout_s: float | None = option(help="the per-run timeout: past it the engine is stopped and every case not "
                                              "yet returned is an error (default: none)", flag="run-timeout",
                                         type=float, metavar="SECONDS")
    reference: str = option("auto", "live: run the reference; stored: only recorded references (`vlm-parity "
                                    "record`), a stale or missing one is an error naming what changed; auto: stored "
                                    "where fresh, else live with a warning (default: auto)", choices=REFERENCE_MODES)
    references_dir: Path | None = option(help="stored references root (default: the project's references/)",
                                         type=Path, metavar="DIR")
    overlap: str = option("auto", "start the engine groups while the reference runs: auto = when every side is on "
                                  "the CPU; on a GPU two processes would hold its memory at once, so there it is "
                                  "opt-in", choices=("auto", "on", "off"))
    verbose: bool = option(False, "show every request and passing case, and the engines' own output, on the console "
                                  "(default: a progress bar per engine, engine output in OUT/logs/)",
                           action="store_true", aliases=("-v",))
    localize: str = option("failing", "stage ladders after the run: failing (each failing case is re-run once in a "
                                      "probe engine and in the reference, with hooks, to find the first stage inside "
                                      "the model where they differ), off, or CASE,... (those cases too)",
                           metavar="failing|off|CASE,...")
    repro_dir: Path | None = option(help="write a reproduction folder (repro.py, BUG_REPORT.md; `vlm-parity repro`) "
                                         "for every failing or erroring cell under DIR (default: one per bug, the "
                                         "first cell of each group that needs attention, under OUT/repro)",
                                    type=Path, metavar="DIR")
    detail: list[str] = option(help="cases whose per-position charts and token tables the report embeds: auto (every "
                                    "case while the run is small, else those that fail, error, drift or are known), "
                                    "attention (only those), all, or CASE,... (those too) (default: auto)",
                               type=comma_list, metavar="auto|attention|all|CASE,...", factory=lambda: ["auto"])
    history: Path | None = option(help="the nightly history to add this run to: a folder, a Parquet dataset of runs and "
                                       "of every cell's metrics (an older FILE.jsonl is still read and appended to)",
                                  type=Path, metavar="DIR")
    policy: str = option("default", "gate policy from the gate config (default: default)")
    gate_config: Path | None = option(help="gate YAML (default: the packaged one)", type=Path)


def same_as(name: str, default: Any = dataclasses.MISSING, **changes: Any) -> Any:
    """A field of another config (record's, the bench's) that is RunConfig's option `name`: the same flag,
    help and parsing, declared once; `changes` adjusts the option (its help, its front ends)."""
    f = RunConfig.__dataclass_fields__[name]
    spec = {**f.metadata["option"], **changes}
    if default is not dataclasses.MISSING:
        return field(default=default, metadata={"option": spec})
    if f.default_factory is not dataclasses.MISSING:
        return field(default_factory=f.default_factory, metadata={"option": spec})
    return field(default=f.default, metadata={"option": spec})


def options(cls: type = RunConfig, front: str = "cli") -> Iterator[tuple[dataclasses.Field[Any], dict[str, Any]]]:
    """The fields of `cls` that `front` offers as options, with their option metadata."""
    for f in dataclasses.fields(cls):
        spec = f.metadata.get("option")
        if spec and front in spec["fronts"]:
            yield f, spec


def flag_of(f: dataclasses.Field[Any], spec: dict[str, Any]) -> str:
    return spec["flag"] or f.name.replace("_", "-")


def add_options(add: Callable[..., Any], prefix: str = "", cls: type = RunConfig, front: str = "cli") -> None:
    """Declare the options of `cls` through `add` (argparse's add_argument or pytest's addoption), with dest
    = prefix + field name. Defaults stay None so the config's own default applies (one place for each)."""
    for f, spec in options(cls, front):
        kwargs = dict(spec["argparse"])
        if kwargs.get("action") == "append":
            kwargs["default"] = []
        names = [f"--{prefix}{flag_of(f, spec)}", *(spec.get("aliases", ()) if not prefix else ())]
        add(*names, dest=f"{prefix.replace('-', '_')}{f.name}", help=spec["help"], **kwargs)


def build_config(get: Callable[[str], Any], cls: type = RunConfig, front: str = "cli", **fixed: Any) -> Any:
    """The config from option values (`get(field name)`, None or [] when not given), plus `fixed` fields."""
    values: dict[str, Any] = {}
    for f, spec in options(cls, front):
        value = get(f.name)
        if value is None or value == [] or value is False:  # not given: the config's default
            continue
        values[f.name] = spec["convert"](value) if spec["convert"] else value
    return cls(**{**values, **fixed})


def run_config(get: Callable[[str], Any], root: Path = Path("."), front: str = "cli", **fixed: Any) -> RunConfig:
    """The RunConfig of a front end; relative defaults (cases/, reports/latest) resolved under `root`."""
    cfg = build_config(get, RunConfig, front, **fixed)
    if not cfg.cases:
        cfg.cases = [root / DEFAULT_CASES]
    if get("out") is None and "out" not in fixed:
        cfg.out = root / DEFAULT_OUT
    return cfg
