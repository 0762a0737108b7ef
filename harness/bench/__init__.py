"""`vlm-parity bench`: the harness's own cost against the engine's and the reference's irreducible work.

Kept free of imports: `python -m harness.bench.probe` runs inside every measured
subprocess, and what this package imports would be counted as harness start-up.
"""
