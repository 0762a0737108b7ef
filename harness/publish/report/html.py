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


def _chart(cmp: CaseComparison) -> dict[str, Any]:
    """Chart data: the engine's per-position diffs and the prefill_max bound in force; a non-finite diff (the engine
    did not score the token) becomes a gap, since JSON has no inf."""
    check = cmp.checks.get("prefill_max")
    return {"diffs": _plotted(cmp.prefill_diffs), "spans": image_spans(cmp.image_mask),
            "threshold": check.bound if check else None}


def _plotted(values: Sequence[float | None]) -> list[float | None]:
    """Values as a chart needs them: four significant digits (a chart shows no more; the store has them all)."""
    return [float(f"{v:.4g}") if v is not None and math.isfinite(v) else None for v in values]


# `--detail auto`: every case's per-position charts and token tables are embedded while the run has at most this many
# compared positions (cells x prompt and output positions: the default run has about 40,000); past it only the
# cells that need attention and those of the cases chosen, the rest one `vlm-parity show` away.
DETAIL_POSITIONS = 200_000


def _positions(run: RunResult) -> int:
    return sum(v.comparison.prompt_len_reference + v.comparison.decode_len for c in run.cases
               for v in c.variants.values() if v.comparison)


def attention_cells(case: CaseResult) -> set[str]:
    """The case's cells that fail, error, are known or drift: their detail is always embedded."""
    return {name for name, v in case.variants.items() if v.verdict in FAILED or v.drifting}


def detailed(run: RunResult, detail: Sequence[str] = ("auto",)) -> dict[str, set[str]]:
    """The cases whose per-position data the report embeds, each with the cells charted: every cell of the cases
    named in `detail`, and of every case with `all` (or `auto` on a run within DETAIL_POSITIONS); else the cells
    that need attention."""
    everything = "all" in detail or ("auto" in detail and _positions(run) <= DETAIL_POSITIONS)
    chosen = {c.case_id: set(c.variants) if everything or c.case_id in detail else attention_cells(c)
              for c in run.cases}
    return {case: cells for case, cells in chosen.items() if cells}


def case_charts(case: CaseResult, cells: set[str]) -> dict[str, Any]:
    """The charts' data of the case's `cells`, by 'case::variant', and the floor's per-position error once for
    them all: embedded beside the case's detail and parsed when it is opened."""
    floor = case.floor.diffs if case.floor and not case.floor.unavailable else []
    return {"floor": _plotted(floor),
            "charts": {f"{case.case_id}::{name}": _chart(v.comparison) for name, v in case.variants.items()
                       if name in cells and v.comparison and v.comparison.prefill_diffs}}


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
    rows = ((c, store.load(c) if c.case_id in chosen else None, chosen.get(c.case_id, set())) for c in run.cases)
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
