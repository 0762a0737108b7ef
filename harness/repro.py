"""`vlm-parity repro`: one cell of a run as a reproduction that can go upstream.

Engine teams triage by minimal reproductions. For one case on one variant this writes a folder holding the
case (its YAML entry, its images and video frames, copied), the variant's definition, `repro.py` and
`BUG_REPORT.md`. `repro.py` runs that cell again from the folder alone: the same request, or sequence of
requests (a warm-up, an over-long request first, repeats), with the same engine settings and model, through
the adapter the run used, against a live transformers reference; it prints both sides' prompt ids, the
logprob difference at the first position past the floor rule's bound and the greedy outputs, and exits 1
while the cell fails or errors (records of known failures are not applied: the reproduction of a bug on record
fails until the bug is fixed), 0 once it passes. `BUG_REPORT.md` is the Markdown an engine's issue tracker
takes: versions, hardware, the request, the metric table with floors and ratios, the first differing stage
and the commands.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import pprint
import shutil
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from harness.core.files import write_atomic
from harness.core.format import fmt
from harness.core.format import ratio as ratio_text
from harness.core.schema import CaseResult, EngineOutput, RunResult, VariantResult
from harness.inputs.decode.facts import image_facts
from harness.judging.explain import finding_text, ladder_text, variant_lines
from harness.publish.positions import PositionStore
from harness.publish.report.html import REPRO_FILES, repro_folder
from harness.run.variants import Variant

REPRO_FILE, REPORT_FILE = REPRO_FILES  # the report links to them
CASE_FILE, VARIANTS_FILE = "case.yaml", "variants.yaml"
FAILED = ("fail", "error")
# The run's settings a reproduction takes from the results' provenance (RunConfig field -> provenance key).
SETTINGS = {"engine": "engine", "model": "model", "reference_engine": "reference_engine",
            "reference_model": "reference_model", "dtype": "dtype",
            "reference_dtype": "reference_dtype", "device": "device", "decoder": "decoder",
            "engine_options": "engine_options"}


class ReproError(ValueError):
    """A cell that cannot be reproduced from these results (unknown case or variant, case file gone)."""


def write_repro(run: RunResult, case_id: str, variant: str, out: Path, results: Path | None = None) -> Path:
    """The reproduction folder of one cell of `run` (`results`: the file it was read from, for the report)."""
    try:
        case = run.case(case_id)
    except KeyError:
        raise ReproError(f"case {case_id!r} is not in the results (cases: "
                         f"{', '.join(c.case_id for c in run.cases[:12])}{', ...' if len(run.cases) > 12 else ''})")
    if results is not None:  # its per-position data, for the first position past the bound
        case = PositionStore.of(results).load(case)
    cell = case.variants.get(variant)
    if cell is None:
        raise ReproError(f"case {case_id!r} has no variant {variant!r} in the results "
                         f"(it has: {', '.join(case.variants) or 'none'})")
    described = next((v for v in run.variants if v["name"] == variant), None)
    if described is None:
        raise ReproError(f"variant {variant!r} is not described in the results' variants")
    out.mkdir(parents=True, exist_ok=True)
    entry = _case_entry(case, out)
    write_atomic(out / CASE_FILE, yaml.safe_dump({"cases": [entry]}, sort_keys=False, allow_unicode=True))
    write_atomic(out / VARIANTS_FILE, yaml.safe_dump({"variants": {variant: variant_yaml(described)}},
                                                     sort_keys=False, allow_unicode=True))
    spec = repro_spec(run, case_id, variant)
    write_atomic(out / REPRO_FILE, repro_script(spec, case, described))
    write_atomic(out / REPORT_FILE, bug_report(run, case, cell, described, spec, out, results))
    return out


def write_repros(run: RunResult, out: Path, results: Path | None = None, every: bool = True) -> list[Path]:
    """Reproductions of the run's failing and erroring cells under `out` (every one, or the first cell of each
    attention group: one per bug); a cell that cannot be reproduced is said, the others still written."""
    from harness.publish.attention import attention

    if every:
        cells = [(c.case_id, name) for c in run.cases for name, v in c.variants.items() if v.verdict in FAILED]
    else:
        cells = [(g.cells[0].case, g.cells[0].variant) for g in attention(run)
                 if g.level in FAILED and g.cells[0].variant]
    written = []
    for case_id, variant in cells:
        try:
            written.append(write_repro(run, case_id, variant, out / repro_folder(case_id, variant), results))
        except Exception as exc:  # one cell that cannot be written must not cost the run its report
            print(f"vlm-parity: no reproduction of {case_id} on {variant}: {type(exc).__name__}: {exc}")
    return written


def _case_entry(case: CaseResult, out: Path) -> dict[str, Any]:
    """The case's YAML entry from its source file, its images and video folders copied under `out`."""
    source = Path(case.source)
    if not source.is_file():
        raise ReproError(f"{case.source}: the case file of {case.case_id!r} is not on this machine (run "
                         "`vlm-parity repro` where the run's cases are)")
    entries = (yaml.safe_load(source.read_text()) or {}).get("cases") or []
    raw = next((dict(e) for e in entries if isinstance(e, dict) and e.get("id") == case.case_id), None)
    if raw is None:
        raise ReproError(f"{source}: case {case.case_id!r} is no longer in the file")
    images = []
    for i, image in enumerate(case.images):
        target = out / "images" / f"{i}-{Path(image).name}"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(image, target)
        images.append(target.relative_to(out).as_posix())
    videos = []
    for i, frames in enumerate(case.videos):
        target = out / "videos" / f"{i}-{Path(frames).name}"
        shutil.copytree(frames, target, dirs_exist_ok=True)
        videos.append(target.relative_to(out).as_posix())
    raw.update({k: v for k, v in (("images", images), ("videos", videos)) if v or k in raw})
    return raw


def variant_yaml(described: dict[str, Any]) -> dict[str, Any]:
    """A variant as results describe it (`Variant.describe`), back in variants.yaml's form."""
    spec: dict[str, Any] = {}
    for f in dataclasses.fields(Variant):
        if "yaml" in f.metadata and f.name in described and f.name != "reference_decoder":
            value = described[f.name]
            spec[f.metadata["yaml"] or f.name] = list(value) if isinstance(value, tuple) else value
    decoder = described.get("reference_decoder", "pil")
    reference: dict[str, Any] = {"decoder": decoder} if decoder != "pil" else {}
    if described.get("reference_mm"):
        reference["mm_kwargs"] = "auto"
    if described.get("reference_same"):
        reference["same"] = list(described["reference_same"])
    if reference:
        spec["reference"] = reference
    return {k: v for k, v in spec.items() if v not in (None, {}, [], "")}


def repro_spec(run: RunResult, case_id: str, variant: str) -> dict[str, Any]:
    """What repro.py carries: the cell and the run's settings (a built-in model by its name, so a fresh
    machine builds it; a checkpoint by its path)."""
    p = run.provenance
    spec: dict[str, Any] = {"case": case_id, "variant": variant}
    for field_name, key in SETTINGS.items():
        value = getattr(p, key)
        if value not in (None, {}, ""):
            spec[field_name] = value
    if p.model_name:
        spec["model"] = p.model_name
        if p.reference_model in (None, p.model):
            spec.pop("reference_model", None)
    if variant.startswith("decoder-"):
        spec["decode_effect"] = variant.removeprefix("decoder-")
    return spec


def repro_script(spec: dict[str, Any], case: CaseResult, described: dict[str, Any]) -> str:
    """repro.py: the cell's request in words (docstring) and as data (SPEC), run by `reproduce`."""
    media = [Path(i).name for i in case.images] + [f"{Path(v).name}/ (video frames)" for v in case.videos]
    request = ", ".join(f"{k}={v}" for k, v in {**described.get("features", {}),
                                                 **described.get("request", {})}.items()) or "as the base"
    doc = "\n".join([
        f"Reproduction of one vlm-parity cell: case {case.case_id!r} on variant {spec['variant']!r}.", "",
        f"Engine {spec.get('engine')} ({spec.get('device', 'cpu')}, {spec.get('dtype')}) serving {spec.get('model')}, "
        f"against the reference ({spec.get('reference_engine', 'hf')}: transformers) run live on the same input.",
        "Prompt (as rendered with the reference's chat template):", _indent(case.prompt_text),
        f"Media (beside this file): {', '.join(media) or 'none'}.",
        textwrap.fill(f"Variant {spec['variant']}: {request}. {described.get('reason', '')}", 110), "",
        f"Run it from anywhere with the project's venv:  .venv/bin/python {REPRO_FILE}",
        "It prints both sides' prompt ids, the logprob difference at the first position past the floor rule's",
        "bound and the greedy outputs. Exit status: 1 while the cell fails or errors, 0 once it passes, 2 when",
        f"the run itself could not complete. {REPORT_FILE} beside it says what the run found."])
    doc = doc.replace("\\", "\\\\").replace('"""', '\\"\\"\\"')
    return f'''"""{doc}
"""
import sys
from pathlib import Path

SPEC = {pprint.pformat(spec, width=100)}

if __name__ == "__main__":
    from harness.repro import reproduce

    sys.exit(reproduce(SPEC, Path(__file__).resolve().parent))
'''


def _indent(text: str, by: str = "    ") -> str:
    return "\n".join(by + line for line in text.splitlines()) or by + "(empty)"


def reproduce(spec: dict[str, Any], folder: Path) -> int:
    """Run the cell of `spec` from `folder` (its case.yaml, variants.yaml, images) and print what differs;
    the exit status of repro.py."""
    from harness.engines.lifetime import ending_on_signals
    from harness.run.options import RunConfig
    from harness.run.plan import make_plan
    from harness.runner import execute, quiet_third_parties

    settings = {k: v for k, v in spec.items() if k in SETTINGS or k == "decode_effect"}
    variants = [folder / VARIANTS_FILE] if (folder / VARIANTS_FILE).is_file() else []
    cfg = RunConfig(cases=[folder / CASE_FILE], only={spec["case"]}, variants=[spec["variant"]],
                    variants_files=variants, reference="live", localize="off", out=folder / "last-run", **settings)
    quiet_third_parties()
    try:
        with ending_on_signals():
            plan = dataclasses.replace(make_plan(cfg), known=[])  # a bug on record still fails here
            run = execute(plan, lambda line: None)
    except Exception as exc:  # the run itself could not complete
        print(f"the run could not complete: {type(exc).__name__}: {exc}")
        return 2
    case = next((PositionStore(cfg.out).load(c) for c in run.cases if c.case_id == spec["case"]), None)
    cell = case.variants.get(spec["variant"]) if case is not None else None
    if case is None or cell is None:
        print(f"case {spec['case']!r} on {spec['variant']!r} did not run" + (f": {'; '.join(case.reasons)}"
                                                                           if case is not None else ""))
        return 2
    print("\n".join(cell_lines(case, cell)))
    return 1 if cell.verdict in FAILED else 0


def cell_lines(case: CaseResult, cell: VariantResult) -> list[str]:
    """One cell in words: both sides' prompt ids, the first position past the bound with both logprobs, the
    greedy outputs, and the verdict with its findings."""
    engine, reference = cell.engine, case.reference
    lines = [f"case {case.case_id} on {cell.variant}: {cell.verdict.upper()}"]
    lines += [f"  {line}" for line in variant_lines(cell)] or ["  every check within its floor rule"]
    if reference is not None and engine is not None:
        lines += _prompt_lines(case, engine, reference)
        lines += _position_lines(case, cell, engine, reference)
        lines += [f"greedy output, engine:    {engine.output_text!r} {_ids(engine.output_ids)}",
                  f"greedy output, reference: {reference.output_text!r} {_ids(reference.output_ids)}"]
    elif engine is None:
        lines.append("the engine returned no output for this cell")
    return lines


def _ids(ids: Sequence[int], keep: int = 24) -> str:
    shown = ", ".join(map(str, ids[:keep])) + (f", ... ({len(ids)} ids)" if len(ids) > keep else "")
    return f"[{shown}]"


def _prompt_lines(case: CaseResult, engine: EngineOutput, reference: EngineOutput) -> list[str]:
    from harness.judging.compare.prefill import first_id_mismatch

    if not engine.prompt_ids:
        return ["prompt ids: the engine returned none (no prompt logprobs on this variant)",
                f"prompt ids, reference: {_ids(reference.prompt_ids, 400)}"]
    first = first_id_mismatch(engine.prompt_ids, reference.prompt_ids)
    if first is None:
        return [f"prompt ids: equal on both sides ({len(engine.prompt_ids)} tokens): {_ids(engine.prompt_ids, 400)}"]
    return [f"prompt ids differ from position {first}:",
            f"  engine    ({len(engine.prompt_ids)}): {_ids(engine.prompt_ids, 400)}",
            f"  reference ({len(reference.prompt_ids)}): {_ids(reference.prompt_ids, 400)}"]


def first_past_bound(diffs: Sequence[float | None], bound: float | None) -> int | None:
    """The first prompt position whose logprob difference is past `bound` (no bound, or none past it: the
    largest difference's position); None where nothing was compared."""
    scored = [(i, d) for i, d in enumerate(diffs) if d is not None]
    if not scored:
        return None
    if bound is not None:
        past = next((i for i, d in scored if d > bound), None)
        if past is not None:
            return past
    return max(scored, key=lambda item: item[1])[0]


def _position_lines(case: CaseResult, cell: VariantResult, engine: EngineOutput,
                    reference: EngineOutput) -> list[str]:
    cmp = cell.comparison
    if cmp is None or not cmp.prefill_diffs:
        return ["prompt logprobs: not compared on this variant"]
    check = cmp.checks.get("prefill_max")
    bound = check.bound if check is not None else None
    at = first_past_bound(cmp.prefill_diffs, bound)
    if at is None:
        return ["prompt logprobs: no position scored by both sides"]
    ref, eng = reference.prompt_logprobs[at], engine.prompt_logprobs[at]
    token = ref.token_id if ref is not None else None
    text = case.tokens.get(str(token), "") if token is not None else ""
    past = bound is not None and cmp.prefill_diffs[at] > bound
    what = "first position past the bound" if past else "largest difference (no position past the bound)"
    floor = f" (bound {fmt(bound)}: k x the floor {fmt(check.floor)})" if check is not None and check.floor else ""
    return [f"prompt logprobs, {what}{floor}: position {at} of {len(cmp.prefill_diffs)}, token {token} {text!r}"
            f"{' (image)' if at < len(cmp.image_mask) and cmp.image_mask[at] else ''}: engine "
            f"{fmt(eng.logprob if eng else None)}, reference {fmt(ref.logprob if ref else None)}, "
            f"|difference| {fmt(cmp.prefill_diffs[at])}"]


def bug_report(run: RunResult, case: CaseResult, cell: VariantResult, described: dict[str, Any],
               spec: dict[str, Any], folder: Path, results: Path | None = None) -> str:
    """BUG_REPORT.md: what an engine's issue tracker needs, from the run's records."""
    p = run.provenance
    ref_info, eng_info = p.reference_info or {}, p.engine_info or {}
    first = (variant_lines(cell) or [cell.verdict])[0]
    hardware = p.hardware or {}
    lines = [f"# {p.engine} {p.engine_version or ''}: {described.get('diagnosis') or cell.variant} "
             f"({case.case_id})", "",
             f"Found by vlm-parity on variant `{cell.variant}`: {first}", "",
             f"Variant `{cell.variant}`: {described.get('reason', '')}", "",
             "## Versions and hardware", "", "| | |", "|---|---|",
             f"| engine | {p.engine} {p.engine_version or '?'} ({p.device}, {p.dtype}) |",
             f"| reference | {p.reference_engine}: transformers {ref_info.get('transformers', '?')}, torch "
             f"{ref_info.get('torch', '?')} ({p.reference_dtype or p.dtype}) |",
             f"| engine's torch / transformers | {eng_info.get('torch', '?')} / {eng_info.get('transformers', '?')} |",
             f"| model | {p.model_name or p.model} (sha256 {(p.model_sha256 or '?')[:16]}) |",
             f"| hardware | {hardware.get('cpu', '?')}, {hardware.get('cores', '?')} cores, "
             f"{', '.join(hardware.get('vector_extensions', [])[-3:]) or '?'}; "
             f"GPU {hardware.get('gpu') or 'none'} |",
             f"| harness | {p.harness_version} at {(p.git_commit or '?')[:12]}, run {p.date} |", "",
             "## The request", "",
             f"- engine settings: features {json.dumps(described.get('features') or {})}, options "
             f"{json.dumps({**(p.engine_options or {}), **(described.get('engine_options') or {})})}",
             f"- request: {json.dumps(described.get('request') or {})} (the variant's sequence: "
             f"{_sequence(described)})",
             f"- media: {', '.join(_image_text(Path(i)) for i in case.images) or 'no images'}"
             + (f"; videos: {', '.join(Path(v).name for v in case.videos)}" if case.videos else ""),
             "- prompt, rendered with the reference's chat template:", "", "```text", case.prompt_text, "```", "",
             "## What differs", ""]
    lines += ["```text", *cell_lines(case, cell), "```", ""]
    lines += _metric_table(cell)
    ladder = cell.ladder
    lines += ["## Where it first differs", "",
              ladder_text(ladder, cell.verdict == "fail") if ladder is not None
              else "not probed (the stage ladder runs on a run's first failing cases)", ""]
    options = "".join(f" --engine-option {k}={json.dumps(v)}" for k, v in (p.engine_options or {}).items())
    command = (f"vlm-parity run --cases {CASE_FILE} --variants-file {VARIANTS_FILE} --case {case.case_id} "
               f"--variants {cell.variant} --engine {p.engine} --model {spec.get('model')} --dtype {p.dtype}{options} "
               "--reference live")
    lines += ["## Reproduce", "", "From this folder, with vlm-parity's venv (exit 1 while it fails, 0 once fixed):",
              "", "```sh", f"python {REPRO_FILE}", "```", "",
              "The same cell as a vlm-parity run, from this folder:", "",
              "```sh", command,
              "```", ""]
    if results is not None:
        lines += [f"Written by `vlm-parity repro {case.case_id} --variant {cell.variant} --results {results}`.", ""]
    return "\n".join(lines)


def _image_text(path: Path) -> str:
    """'astronaut_420.jpg (256x256 JPEG)', or the name alone where the file cannot be read."""
    try:
        facts = image_facts(path)
    except OSError:
        return path.name
    return f"{path.name} ({facts.size[0]}x{facts.size[1]} {facts.format})"


def _sequence(described: dict[str, Any]) -> str:
    """The variant's requests in order, in words."""
    request = described.get("request") or {}
    steps = {"over-long": "an over-long request with the case's images, which must be refused, then the case",
             "other-image": "the same prompt with another image of the same size, then the case",
             "same-image": "the same prompt and image, then the case"}
    said = [steps.get(request.get("warmup"), "the case")]
    if request.get("repeats"):
        said.append(f"sent {request['repeats']} times")
    said.append("alone" if request.get("submit") == "alone" else "batched with the run's other cases")
    return ", ".join(said)


def _metric_table(cell: VariantResult) -> list[str]:
    checks = [c for cmp in (cell.comparison, cell.against_base) if cmp is not None for c in cmp.checks.values()
              if c.rule != "info"]
    if not checks:
        return []
    rows = ["| metric | against | value | floor | bound | ratio to floor | verdict |", "|---|---|---|---|---|---|---|"]
    for c in checks:
        rows.append(f"| {c.metric} | {c.against} | {fmt(c.value)} | {fmt(c.floor)} | {fmt(c.bound)} | "
                    f"{ratio_text(c.ratio) if c.ratio is not None else '–'} | {c.level} |")
    findings = [finding_text(f) for f in cell.failing]
    return [*rows, "", *([f"- {f}" for f in findings] + [""] if findings else [])]


def add_repro_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("case", help="the case id")
    parser.add_argument("--variant", required=True, help="the variant (a column of the report's grid)")
    parser.add_argument("--results", type=Path, default=Path("reports/latest/results.json"),
                        help="the run's results.json (default: reports/latest/results.json)")
    parser.add_argument("--out", type=Path, help="the folder to write (default: repro/CASE-VARIANT/)")


def repro_command(args: argparse.Namespace) -> int:
    """0 written, 2 when the results or the cell cannot be read."""
    from harness.publish.results import read_results

    try:
        run = read_results(args.results)
        out = args.out or Path("repro") / repro_folder(args.case, args.variant)
        out = write_repro(run, args.case, args.variant, out, args.results)
    except (ValueError, OSError) as exc:
        print(f"vlm-parity repro: {args.results}: {exc}")
        return 2
    print(f"{out / REPRO_FILE}\n{out / REPORT_FILE}")
    return 0
