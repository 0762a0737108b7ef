"""`vlm-parity run --model all`: every built-in architecture through the same run, one after the other.

Each model gets the run's settings and its own folder (`<out>/<model>/`: results, report, logs); a model whose
run cannot complete is a row with its error and the others still run. The table (`harness.publish.zoo`) is
printed and written beside them; the exit code is the worst model's.
"""
from __future__ import annotations

import time
from dataclasses import replace

from harness.config import ConfigError
from harness.inputs.models import MODELS
from harness.publish.console import Console, quiet_third_parties
from harness.publish.zoo import HEADER, ZooRow, failed_row, table_rows, verdict, write_zoo, zoo_row
from harness.run.observe import Observer
from harness.run.options import RunConfig
from harness.runner import run_and_publish


def run_zoo(cfg: RunConfig, observer: Observer | None = None) -> int:
    """0 every model passed (known failures on record included), 1 some failed, 2 some could not run."""
    console = Console(verbose=cfg.verbose)
    if not cfg.verbose:
        quiet_third_parties()
    rows: list[ZooRow] = []
    codes = []
    page = write_zoo(cfg.out, rows, list(MODELS))
    for name, recipe in MODELS.items():
        console.print(f"== {name} ({recipe.architecture}) ==", "bold")
        start = time.perf_counter()
        try:
            done = run_and_publish(replace(cfg, model=name, out=cfg.out / name), console, observer)
        except ConfigError as exc:  # the same files for every model: no point going on
            console.finish_failed(f"vlm-parity: {exc}")
            return 2
        except Exception as exc:  # this model's run could not complete; the others still run
            console.finish_failed(f"vlm-parity: {name}: run failed: {type(exc).__name__}: {exc}")
            rows.append(failed_row(name, recipe.architecture, f"{type(exc).__name__}: {exc}",
                                   time.perf_counter() - start))
            codes.append(2)
        else:
            rows.append(zoo_row(name, recipe.architecture, done.run, time.perf_counter() - start))
            codes.append(done.exit_code)
        page = write_zoo(cfg.out, rows, list(MODELS))  # after every model: a zoo stopped half way keeps its table
    print_table(console, rows)
    console.print(f"ZOO {verdict(rows).upper()}: {len(rows)} models; report: {page}")
    return max(codes, default=2)


def print_table(console: Console, rows: list[ZooRow]) -> None:
    """At least 140 columns wide, also in a CI log (rich would fold every cell at 80)."""
    from rich.console import Console as RichConsole
    from rich.table import Table

    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in HEADER:
        table.add_column(column, overflow="fold", no_wrap=column != "known records")
    for cells in table_rows(rows):
        table.add_row(*cells)
    RichConsole(file=console.out.file, width=max(console.out.width, 140), highlight=False).print(table)
