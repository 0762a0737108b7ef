"""The self-contained HTML report: one file, CSS, scripts, charts and images inline.

It opens offline from a CI artifact (no CDN: plotly.js is inlined from the
plotly package). Autoescaping is on everywhere and chart data goes through
`tojson`, because model outputs and case text are untrusted.
"""
from __future__ import annotations

import functools
import math
import os
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.core.files import write_atomic
from harness.core.format import display, fmt, ratio
from harness.core.schema import (
    METRIC_INFO,
    TABLE_METRICS,
    VERDICTS,
    CaseComparison,
    CaseResult,
    Floor,
    RunResult,
)
from harness.judging.explain import (
    FAILED,
    case_lines,
    drift_lines,
    finding_text,
    info_lines,
    ladder_text,
    run_lines,
    variant_lines,
    warning_lines,
)
from harness.judging.ladder import LABELS
from harness.judging.suite import shift_text
from harness.publish.attention import (
    attention,
    case_headline,
    cell_ratio,
    group_title,
    headline,
    known_records,
)
from harness.publish.gate import GateDecision
from harness.publish.history import HEADLINE
from harness.publish.positions import PositionStore
from harness.publish.report.decode_effect import (
    PAIRS,
    decode_effect_rows,
    decoder_variants,
)

if TYPE_CHECKING:
    from jinja2 import Environment

PROVENANCE_KEYS = (
    "engine", "engine_version", "model_name", "model", "model_sha256", "reference_engine", "reference_model",
    "reference_model_sha256", "dtype", "reference_dtype", "device", "decoder", "base_variant", "engine_options",
    "capabilities", "throughput_tok_s", "engine_run_s", "reference_mode", "references_stored", "references_live",
    "hardware", "harness_version", "git_commit", "date", "cases",
)


@functools.cache
def _env() -> Environment:
    """Built when the first report is rendered, so importing the report package costs no jinja2."""
    from jinja2 import Environment, PackageLoader, Undefined, select_autoescape

    env = Environment(loader=PackageLoader("harness.publish.report", "templates"),
                      autoescape=select_autoescape(["html", "j2"]), trim_blocks=True, lstrip_blocks=True)
    env.filters["fmt"] = lambda value: fmt(None if isinstance(value, Undefined) else value)
    env.filters.update(ratio=ratio, case_lines=case_lines, variant_lines=variant_lines, drift_lines=drift_lines,
                       warning_lines=warning_lines, info_lines=info_lines, run_lines=run_lines,
                       finding_text=finding_text, display=display, ladder_text=ladder_text,
                       group_title=group_title, cell_ratio=cell_ratio, shift_text=shift_text)
    env.globals.update(metric_info=METRIC_INFO, stage_labels=LABELS, case_charts=case_charts)
    return env


def _static(name: str) -> str:
    return resources.files("harness.publish.report").joinpath("static", name).read_text()


def image_spans(mask: list[bool]) -> list[tuple[int, int]]:
    """Contiguous [start, end) runs of image-placeholder positions, for shading."""
    spans, start = [], None
    for i, inside in enumerate([*mask, False]):
        if inside and start is None:
            start = i
        elif not inside and start is not None:
            spans.append((start, i))
            start = None
    return spans


def _chart(cmp: CaseComparison, floor: Floor | None) -> dict[str, Any]:
    """Chart data: the engine's per-position diffs, the floor's beside them, and the prefill_max bound in
    force; a non-finite diff (the engine did not score the token) becomes a gap, since JSON has no inf."""
    diffs = [d if d is None or math.isfinite(d) else None for d in cmp.prefill_diffs]
    check = cmp.checks.get("prefill_max")
    return {"diffs": diffs, "spans": image_spans(cmp.image_mask), "threshold": check.bound if check else None,
            "floor": floor.diffs if floor and not floor.unavailable else []}


# `--detail auto`: every case's per-position charts and token tables are embedded while the run has at most this many
# compared positions (cells x prompt and output positions: the default run has about 40,000); past it only the
# cases that need attention and those chosen, the rest one `vlm-parity show` away.
DETAIL_POSITIONS = 200_000


def _positions(run: RunResult) -> int:
    return sum(v.comparison.prompt_len_reference + v.comparison.decode_len for c in run.cases
               for v in c.variants.values() if v.comparison)


def needs_attention(case: CaseResult) -> bool:
    """A case with a cell that fails, errors, is known or drifts: its detail is always embedded."""
    return case.verdict in FAILED or any(v.drifting for v in case.variants.values())


def detailed(run: RunResult, detail: Sequence[str] = ("auto",)) -> set[str]:
    """The cases whose per-position data the report embeds: those that need attention, those named in `detail`,
    and every case with `all` (or `auto` on a run within DETAIL_POSITIONS)."""
    everything = "all" in detail or ("auto" in detail and _positions(run) <= DETAIL_POSITIONS)
    return {c.case_id for c in run.cases if everything or c.case_id in detail or needs_attention(c)}


def case_charts(case: CaseResult) -> dict[str, Any]:
    """The case's chart data by 'case::variant', embedded beside its detail and parsed when it is opened."""
    return {f"{case.case_id}::{name}": _chart(v.comparison, case.floor)
            for name, v in case.variants.items() if v.comparison and v.comparison.prefill_diffs}


def trend_data(history: list[dict[str, Any]], last: int) -> dict[str, Any] | None:
    """Each headline metric over the last `last` history entries (this run included)."""
    entries = history[-last:]
    if len(entries) < 2:
        return None
    suite = sorted({m for e in entries for m in e.get("suite", {})})
    return {
        "labels": [f"{e.get('date', '')[:16]} {(e.get('git_commit') or '')[:8]}" for e in entries],
        "metrics": {**{m: [e["metrics"].get(m) for e in entries] for m in HEADLINE},
                    # the whole suite per metric: the median cell's ratio to its floor, a slow walk made visible
                    **{f"{m} median ratio": [e.get("suite", {}).get(m, {}).get("p50") for e in entries]
                       for m in suite}},
    }


REPRO_FILES = ("repro.py", "BUG_REPORT.md")  # what `vlm-parity repro` writes in a cell's folder (`harness.repro`)


def repro_folder(case_id: str, variant: str) -> str:
    """The folder name of one cell's reproduction under a run's repro root."""
    return f"{case_id}-{variant}"


def repro_links(run: RunResult, out_dir: Path, root: Path) -> dict[str, str]:
    """'case--variant' -> the cell's reproduction folder relative to the report, for the cells that have one."""
    return {f"{c.case_id}--{name}": os.path.relpath(root / repro_folder(c.case_id, name), out_dir)
            for c in run.cases for name in c.variants
            if (root / repro_folder(c.case_id, name) / REPRO_FILES[0]).is_file()}


def render_html(run: RunResult, out_dir: Path, gate: GateDecision | None = None,
                regressions: list[str] | None = None, history: list[dict[str, Any]] | None = None,
                trend_runs: int = 30, diagnosis: list[str] | None = None, repro_root: Path | None = None,
                store: PositionStore | None = None, detail: Sequence[str] = ("auto",),
                name: str = "index.html") -> Path:
    """index.html, written as it is rendered; cells with a reproduction folder under `repro_root` (default:
    OUT/repro) link to it, other cells that do not pass show the `vlm-parity repro` command that writes one.
    The `detailed` cases' per-position data is read from `store` (default: `out_dir`'s) one case at a time."""
    store = store or PositionStore(out_dir)
    chosen = detailed(run, detail)
    rows = ((c, store.load(c) if c.case_id in chosen else None) for c in run.cases)
    variant_counts = {v["name"]: {k: sum(c.variants[v["name"]].verdict == k for c in run.cases
                                         if v["name"] in c.variants) for k in VERDICTS} for v in run.variants}
    groups = attention(run)
    from plotly.offline import get_plotlyjs

    html = _env().get_template("report.html.j2").generate(
        run=run, rows=rows, p=run.provenance, counts=run.counts(), gate=gate, regressions=regressions or [],
        diagnosis=diagnosis or [],
        trends=trend_data(history or [], trend_runs), table_metrics=TABLE_METRICS,
        attention=groups, attention_cells=sum(len(g.cells) for g in groups), known=known_records(run),
        headline=headline(run), case_headline=case_headline(run),
        base_variant=run.provenance.base_variant, variant_counts=variant_counts,
        tags=sorted({t for c in run.cases for t in c.tags}), provenance_keys=PROVENANCE_KEYS,
        effect_tables={name: decode_effect_rows(run, name) for name in decoder_variants(run)}, effect_pairs=PAIRS,
        repros=repro_links(run, out_dir, repro_root or out_dir / "repro"), repro_files=REPRO_FILES,
        results_path=store.results_dir / "results.json",
        css=_static("report.css"), js=_static("report.js"), plotly_js=get_plotlyjs(),
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    return write_atomic(out_dir / name, html)  # a CI artifact never holds half a report
