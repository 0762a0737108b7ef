"""Report rendering benchmark: 1,000 synthetic case results.

Targets (issue 4): rendering takes <= 5 s and the HTML file stays <= 25 MB.
Prints figures; it is not a timed test (machines here are shared and noisy).

    .venv/bin/python benchmarks/bench_report.py [N]
"""
from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.publish.report import publish  # noqa: E402
from tests.factories import synthetic_run  # noqa: E402


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    start = time.perf_counter()
    run = synthetic_run(n)
    print(f"built {n} synthetic case results in {time.perf_counter() - start:.2f} s")
    times = []
    with tempfile.TemporaryDirectory() as out:
        for _ in range(3):
            start = time.perf_counter()
            published = publish(run, Path(out))
            times.append(time.perf_counter() - start)
        html_mb = published.html.stat().st_size / 1e6
    render = statistics.median(times)
    print(f"publish (HTML + parquet + CSV), median of 3: {render:.2f} s  (target <= 5 s: "
          f"{'ok' if render <= 5 else 'OVER'})")
    print(f"index.html: {html_mb:.1f} MB  (target <= 25 MB: {'ok' if html_mb <= 25 else 'OVER'})")


if __name__ == "__main__":
    main()
