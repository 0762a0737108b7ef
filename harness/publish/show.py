"""`vlm-parity show CASE`: one case of a run, read from its results and its per-position store.

The report embeds per-position charts and token tables only for the cases that need attention once a run is
large (`harness.publish.report.html.detailed`); every other case is this one command away: its verdicts and
findings, every judged metric with its floor and ratio, and, for the chosen variant, one line per prompt
position (both sides' token and logprob, the difference, the floor's, the top-1 of each side) and the two
outputs. `--html FILE` writes the report's page for that case alone, with its charts.
"""
from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from harness.core.format import fmt
from harness.core.schema import CaseResult, RunResult, VariantResult
from harness.judging.explain import case_lines, finding_text, variant_lines
from harness.publish.positions import PositionStore
from harness.publish.results import read_results

if TYPE_CHECKING:
    import pandas as pd


def add_show_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("case", help="the case id")
    parser.add_argument("--variant", help="the variant whose positions are listed (default: the case's headline, "
                                          "the base variant where it ran)")
    parser.add_argument("--results", type=Path, default=Path("reports/latest"),
                        help="results.json, results.jsonl or their folder (default: reports/latest)")
    parser.add_argument("--html", type=Path, metavar="FILE", help="write the case's report page here instead")


def show_command(args: argparse.Namespace) -> int:
    """0 shown, 2 when the results, the case or the variant cannot be read."""
    try:
        run = read_results(args.results)
        case = _case(run, args.case)
        full = PositionStore.of(args.results).load(case)
        if args.html:
            print(_page(run, full, args.html, args.results))
            return 0
        name = args.variant or full.headline or next(iter(full.variants), None)
        if name is not None and name not in full.variants:
            raise ValueError(f"case {args.case!r} has no variant {name!r} (it has: {', '.join(full.variants)})")
    except ValueError as exc:
        print(f"vlm-parity show: {exc}")
        return 2
    print("\n".join(case_text(full, name)))
    return 0


def _case(run: RunResult, case_id: str) -> CaseResult:
    try:
        return run.case(case_id)
    except KeyError:
        known = ", ".join(c.case_id for c in run.cases[:12]) + (", ..." if len(run.cases) > 12 else "")
        raise ValueError(f"case {case_id!r} is not in the results (cases: {known})") from None


def case_text(case: CaseResult, variant: str | None) -> list[str]:
    """The case as text: its verdict and reasons, each variant's verdict and findings, the chosen variant's
    metrics and positions."""
    lines = [f"{case.case_id}: {case.verdict.upper()}", *(f"  {line}" for line in case_lines(case))]
    for name, cell in case.variants.items():
        lines.append(f"variant {name}: {cell.verdict}")
        lines += [f"  {line}" for line in variant_lines(cell)]
        lines += [f"  {finding_text(f)}" for f in cell.drifting]
    if variant is None:
        return lines
    cell = case.variants[variant]
    lines += ["", f"metrics of {variant}:", metric_frame(cell).to_string(index=False)]
    frame = position_frame(case, cell)
    if not frame.empty:
        lines += ["", f"prompt positions of {variant} ({len(frame)}; image: an image placeholder):",
                  frame.to_string(index=False)]
    engine = cell.engine
    if case.reference and engine:
        lines += ["", f"output, reference: {case.reference.output_text!r} {case.reference.output_ids}",
                  f"output, engine:    {engine.output_text!r} {engine.output_ids}"]
    return lines


def metric_frame(cell: VariantResult) -> pd.DataFrame:
    """Every judged metric of the variant, against the reference and its base."""
    import pandas as pd

    rows = [{"against": against, "metric": name, "value": fmt(f.value), "floor": fmt(f.floor), "ratio": fmt(f.ratio),
             "bound": fmt(f.bound), "level": f.level}
            for against, cmp in (("reference", cell.comparison), ("base", cell.against_base)) if cmp
            for name, f in cmp.checks.items()]
    return pd.DataFrame(rows, columns=["against", "metric", "value", "floor", "ratio", "bound", "level"])


def position_frame(case: CaseResult, cell: VariantResult) -> pd.DataFrame:
    """One row per prompt position: the token, both sides' logprobs, their difference and the floor's."""
    import pandas as pd

    ref, eng, cmp = case.reference, cell.engine, cell.comparison
    if ref is None or eng is None or cmp is None or not cmp.prefill_diffs:
        return pd.DataFrame()
    floor = case.floor.diffs if case.floor else []

    def top1(entry: object) -> int | None:
        return entry.top[0][0] if entry is not None and entry.top else None  # type: ignore[attr-defined]

    rows = []
    for i, diff in enumerate(cmp.prefill_diffs):
        r = ref.prompt_logprobs[i] if i < len(ref.prompt_logprobs) else None
        e = eng.prompt_logprobs[i] if i < len(eng.prompt_logprobs) else None
        token = ref.prompt_ids[i] if i < len(ref.prompt_ids) else None
        rows.append({"pos": i, "token": token, "text": case.tokens.get(str(token), ""),
                     "image": bool(cmp.image_mask[i]) if i < len(cmp.image_mask) else False,
                     "reference": fmt(r.logprob if r else None), "engine": fmt(e.logprob if e else None),
                     "diff": fmt(diff), "floor": fmt(floor[i] if i < len(floor) else None),
                     "top1 ref": top1(r), "top1 engine": top1(e)})
    return pd.DataFrame(rows)


def _page(run: RunResult, case: CaseResult, out: Path, results: Path) -> Path:
    """The report of a run holding this case alone, every part of it embedded."""
    from harness.publish.outcome import conclude
    from harness.publish.report.html import render_html

    one = replace(run, cases=[case])
    out.parent.mkdir(parents=True, exist_ok=True)
    return render_html(one, out.parent, conclude(one).gate, store=PositionStore.of(results), detail=("all",),
                       name=out.name)
