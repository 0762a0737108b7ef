"""`vlm-parity`: run a parity suite, re-render its report, gate a release, diff image decoders.

Exit status of `run`: 0 every case passed, 1 some case failed or errored,
2 the run itself could not complete (engine did not start, bad arguments).
`gate`: 0 pass, 1 fail, 2 cannot decide (missing or malformed results).
`decode-diff`: prints decoder pixel deltas and writes heatmaps.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

from harness.bench.command import add_bench_arguments
from harness.calibrate import add_calibrate_arguments, calibrate_command
from harness.config import ConfigError
from harness.decode_diff import add_decode_diff_arguments, run_decode_diff
from harness.engines.lifetime import ending_on_signals
from harness.publish.gate import gate_file, load_gate_config
from harness.publish.merge import merge_runs
from harness.publish.outcome import conclude
from harness.publish.report import publish
from harness.publish.results import PARTIAL, read_results, write_results
from harness.publish.show import add_show_arguments, show_command
from harness.publish.zoo import ALL_MODELS
from harness.record import RecordConfig
from harness.repro import add_repro_arguments, repro_command
from harness.run.observe import Observer
from harness.run.options import add_options, build_config, run_config, same_as
from harness.runner import run_command

EXIT_PASS, EXIT_FAIL, EXIT_ERROR = 0, 1, 2


@dataclass
class _Published:
    """The run options `report` and `merge` share with the run (one declaration each)."""

    detail: list[str] = same_as("detail")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vlm-parity", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the engine and the reference on the cases and compare them")
    add_options(run.add_argument)

    report = sub.add_parser("report", help="re-render the report and tables from a results file, no engine needed")
    report.add_argument("results", type=Path)
    report.add_argument("--out", type=Path, help="default: the results file's folder")
    _publish_arguments(report)

    merge = sub.add_parser("merge", help="merge --shard results into one results file and report")
    merge.add_argument("results", type=Path, nargs="+", help="results.json files (or folders) of every shard")
    merge.add_argument("--out", type=Path, default=Path("reports/merged"), help="default: reports/merged")
    _publish_arguments(merge)

    show = sub.add_parser("show", help="one case of a run from its results and per-position store: verdicts, "
                                       "metrics, every prompt position (or its report page with --html)")
    add_show_arguments(show)

    history = sub.add_parser("history", help="the nightly history: `import` an older JSON-lines history into a "
                                             "dataset folder")
    history_sub = history.add_subparsers(dest="history_command", required=True)
    imports = history_sub.add_parser("import", help="add the runs of FILE.jsonl to the dataset DIR")
    imports.add_argument("jsonl", type=Path, metavar="FILE.jsonl")
    imports.add_argument("dataset", type=Path, metavar="DIR")

    diff = sub.add_parser("decode-diff", help="pixel deltas of image decoders against PIL, with heatmaps")
    add_decode_diff_arguments(diff)

    gate = sub.add_parser("gate", help="decide a release from a results file")
    gate.add_argument("results", type=Path)
    _publish_arguments(gate, report=False)

    record = sub.add_parser("record", help="record the reference's outputs once, for runs with --reference stored|auto")
    add_options(record.add_argument, cls=RecordConfig)

    references = sub.add_parser("references", help="stored references: `check` lists missing and stale ones")
    references_sub = references.add_subparsers(dest="references_command", required=True)
    add_options(references_sub.add_parser("check", help="exit 1 when any case's reference is missing or stale")
                .add_argument, cls=RecordConfig)

    build = sub.add_parser("build-model", help="build (or find) a built-in tiny model and print its folder")
    build.add_argument("name", nargs="?", default=None, help="built-in model name (default: the default model)")
    build.add_argument("--cache", type=Path, help="cache root (default: $VLM_PARITY_CACHE or ~/.cache/vlm-parity)")

    models = sub.add_parser("models", help="list the built-in models (building them) and any checkpoints given")
    models.add_argument("extra", nargs="*", metavar="CHECKPOINT", help="user-supplied checkpoint folders to describe")
    models.add_argument("--cache", type=Path, help="cache root (default: $VLM_PARITY_CACHE or ~/.cache/vlm-parity)")

    calibrate = sub.add_parser("calibrate", help="clean runs' ratios to the floor per metric and dtype, the multiples "
                                                 "they support; --record keeps the suite drift test's clean sample")
    add_calibrate_arguments(calibrate)

    repro = sub.add_parser("repro", help="write one cell of a run as a reproduction folder: repro.py (exit 1 while it "
                                         "fails) and BUG_REPORT.md for an engine's issue tracker")
    add_repro_arguments(repro)

    bench = sub.add_parser("bench", help="measure the harness's own cost against the engine's and the reference's")
    add_bench_arguments(bench)
    return parser


def _publish_arguments(parser: argparse.ArgumentParser, report: bool = True) -> None:
    parser.add_argument("--policy", default="default", help="gate policy from the gate config (default: default)")
    parser.add_argument("--gate-config", type=Path, help="gate YAML (default: the packaged one)")
    if report:
        add_options(parser.add_argument, cls=_Published)


def main(argv: list[str] | None = None, observer: Observer | None = None) -> int:
    """`observer` hears the run's stages and engine streams (`vlm-parity bench` passes its own)."""
    args = build_parser().parse_args(argv)
    with ending_on_signals():  # SIGTERM (a cancelled CI job) or Ctrl-C ends the engine processes first
        return _command(args, observer)


def _command(args: argparse.Namespace, observer: Observer | None) -> int:
    if args.command == "run":
        return _run(args, observer or Observer())
    if args.command == "report":
        return _report(args)
    if args.command == "gate":
        return _gate(args)
    if args.command == "decode-diff":
        return run_decode_diff(args)
    if args.command == "models":
        return _models(args)
    if args.command == "merge":
        return _merge(args)
    if args.command == "show":
        return show_command(args)
    if args.command == "history":
        return _history_import(args)
    if args.command == "calibrate":
        return calibrate_command(args)
    if args.command == "repro":
        return repro_command(args)
    if args.command == "bench":
        from harness.bench.command import run_bench

        return run_bench(args)
    if args.command == "record":
        from harness.record import record

        return record(build_config(lambda name: getattr(args, name), RecordConfig), observer=observer)
    if args.command == "references":
        from harness.record import check

        return check(build_config(lambda name: getattr(args, name), RecordConfig))
    from harness.inputs.models import resolve_model

    print(resolve_model(args.name, args.cache))
    return EXIT_PASS


def _models(args: argparse.Namespace) -> int:
    """The built-in models (and any checkpoints given) as a table at most 100 columns wide, then the known
    failures on record for the default engine, each with the models it applies to (a record of video cases
    does not apply to a model that takes no video)."""
    from rich.console import Console as RichConsole
    from rich.table import Table

    from harness.engines import resolve_engine
    from harness.inputs.cases import load_cases
    from harness.inputs.models import list_models, processor_options, video_token_id
    from harness.run.known import listed, load_known
    from harness.run.options import DEFAULT_CASES
    from harness.run.plan import (
        engine_skip_reason,
        media_skip_reason,
        model_skip_reason,
    )
    from harness.run.variants import load_variants

    engine = resolve_engine("vllm")
    version = engine.version()
    everywhere = {v.name: why for v in load_variants().select(["default"])
                  if (why := engine_skip_reason(v, engine.capabilities, "vllm", "cpu"))}
    profile = [v for v in load_variants().select(["default"]) if v.name not in everywhere]
    cases = load_cases([DEFAULT_CASES]).cases
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column, width in (("name", 24), ("architecture", 24), ("params", 6), ("img 448", 7), ("kind", 7),
                          ("variants that do not apply", 26)):
        table.add_column(column, max_width=width, overflow="fold")
    records: dict[tuple[str, str], dict[str, None]] = {}  # record -> the models it applies to, in order
    rows = list_models(args.cache, args.extra)
    for row in rows:
        model = row["path"] or row["name"]
        takes_video = bool(row["path"]) and video_token_id(model) is not None
        runnable = [c for c in cases if media_skip_reason(c, takes_video) is None]
        for k in load_known(row["name"], model, "vllm", version, "cpu"):
            if any(listed(k.cases, c.id) for c in runnable):
                records.setdefault((k.reason, k.reproduction), {})[row["name"]] = None
        skipped = [v.name for v in profile if row["path"] and (
            engine_skip_reason(v, engine.capabilities_for(model), "vllm", "cpu")
            or model_skip_reason(v, processor_options(model)))]
        params = f"{row['parameters'] / 1e6:.1f}M" if row["parameters"] else "?"
        table.add_row(row["name"], (row["architecture"] or "?").removesuffix("ForConditionalGeneration"), params,
                      str(row["image_tokens_448"] or "?"), row["kind"], ", ".join(skipped) or "-")
    out = RichConsole(width=100, highlight=False, soft_wrap=False)
    out.print(table)
    out.print(f"\nKnown failures on record (vllm {version}, cpu; harness/config/known_failures.yaml):", markup=False)
    names = [row["name"] for row in rows]
    for (reason, reproduction), models in records.items():
        which = "every model" if list(models) == names else ", ".join(models)
        title = reason.split(":")[0]
        title = title if len(title) <= 90 else title[:89] + "…"
        out.print(f"- {title} ({reproduction or 'no reproduction'}): {which}", markup=False)
    for name, why in everywhere.items():
        out.print(f"Not run by vllm for any model: {name} ({why})", markup=False)
    return EXIT_PASS


def _run(args: argparse.Namespace, observer: Observer) -> int:
    cfg = run_config(lambda name: getattr(args, name))
    if cfg.model == ALL_MODELS:
        from harness.zoo import run_zoo

        return run_zoo(cfg, observer)
    return run_command(cfg, observer)


def _history_import(args: argparse.Namespace) -> int:
    """0 imported (or nothing new), 2 when the file cannot be read."""
    from harness.publish.history import import_jsonl

    try:
        added = import_jsonl(args.jsonl, args.dataset)
    except ValueError as exc:
        print(f"vlm-parity history import: {exc}", file=sys.stderr)
        return EXIT_ERROR
    print(f"{added} run(s) of {args.jsonl} added to {args.dataset}")
    return EXIT_PASS


def _detail(args: argparse.Namespace) -> list[str]:
    return build_config(lambda name: getattr(args, name), _Published).detail


def _merge(args: argparse.Namespace) -> int:
    """0 when the merged run passes, 1 when it fails, 2 when the shards do not make one run."""
    try:
        run = merge_runs(args.results, args.out)
        outcome = conclude(run, policy=args.policy, gate=load_gate_config(args.gate_config))
    except ValueError as exc:
        print(f"vlm-parity merge: {exc}", file=sys.stderr)
        return EXIT_ERROR
    write_results(run, args.out)
    published = publish(run, args.out, outcome, detail=_detail(args))
    counts = run.counts()
    print(f"{run.verdict.upper()}: {counts['pass']} pass, {counts['known']} known, {counts['fail']} fail, "
          f"{counts['error']} error from {len(args.results)} shards\nreport: {published.html}")
    return {"pass": EXIT_PASS, "fail": EXIT_FAIL}.get(run.verdict, EXIT_ERROR)


def _report(args: argparse.Namespace) -> int:
    try:
        run = read_results(args.results)
        where = args.results if args.results.is_dir() else args.results.parent
        published = publish(run, args.out or where, conclude(run, policy=args.policy,
                                                             gate=load_gate_config(args.gate_config)),
                            results_dir=where, detail=_detail(args))
    except ValueError as exc:
        print(f"vlm-parity: {exc}", file=sys.stderr)
        return EXIT_ERROR
    if run.status == PARTIAL:
        print(f"PARTIAL run: it stopped before it ended; {len(run.cases)} case result(s) completed and are in "
              "the report")
    print(published.html)
    return EXIT_PASS


def _gate(args: argparse.Namespace) -> int:
    try:
        config = load_gate_config(args.gate_config)
    except ConfigError as exc:
        print(f"vlm-parity gate: {exc}", file=sys.stderr)
        return EXIT_ERROR
    decision = gate_file(args.results, args.policy, config)
    print(f"gate ({decision.policy}): {decision.label.upper()}")
    for reason in decision.reasons:
        print(f"  - {reason}")
    return decision.code


if __name__ == "__main__":
    sys.exit(main())
