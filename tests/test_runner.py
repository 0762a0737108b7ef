"""The runner and CLI end to end with real engines (HF on both sides: fast, and identical by
construction, so any non-pass here is the harness's doing; or HF against its committed stored
references, which a healthy HF matches within the floor on any machine)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from harness.cli import main
from harness.core.schema import SCHEMA_VERSION
from harness.judging.explain import case_lines
from harness.publish.results import read_results
from harness.runner import RunConfig, execute
from tests.conftest import CASES, FAKE
from tests.inline import inline

GOOD_AND_BAD = """
cases:
  - id: good
    images: [images/gradient.png]
    prompt: "What colours do you see?"
    max_new_tokens: 4
  - id: missing-image
    images: [images/no_such_file.png]
    prompt: "Describe it."
  - id: typo
    images: [images/tiny.png]
    prompt: "Describe it."
    max_new_token: 4
  - id: corrupt
    images: [corrupt.jpg]
    prompt: "Describe it."
    max_new_tokens: 4
"""


def run_cli(*args: str) -> int:
    return main(["run", "--engine", "hf", *args])


@pytest.mark.engine
def test_bad_input_is_an_error_result_and_other_cases_still_run(tmp_path: Path, tiny_model: str) -> None:
    (tmp_path / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (tmp_path / "images").mkdir()  # images live inside the case file's folder
    for name in ("gradient.png", "tiny.png"):
        shutil.copy(CASES / "images" / name, tmp_path / "images")
    cases = tmp_path / "cases.yaml"
    cases.write_text(GOOD_AND_BAD)
    out = tmp_path / "out"
    assert run_cli("--model", tiny_model, "--cases", str(cases), "--out", str(out)) == 1
    run = read_results(out / "results.json")
    verdicts = {c.case_id: c for c in run.cases}
    assert run.status == "complete" and verdicts["good"].verdict == "pass"
    assert verdicts["good"].comparison.prefill_max == 0.0
    missing = verdicts["missing-image"]
    assert missing.verdict == "error" and str(cases) in missing.reasons[0]
    assert "field 'images[0]'" in missing.reasons[0]
    assert verdicts["typo"].verdict == "error" and "max_new_token" in verdicts["typo"].reasons[0]
    corrupt = verdicts["corrupt"]
    assert corrupt.verdict == "error" and corrupt.reasons[0].startswith("invalid case: ")  # never reached an engine
    assert "field 'images[0]'" in corrupt.reasons[0] and "corrupt.jpg" in corrupt.reasons[0]
    assert (out / "index.html").exists()


@pytest.mark.engine
def test_all_pass_exits_zero_and_report_rerenders_without_engine(tmp_path: Path, tiny_model: str) -> None:
    out = tmp_path / "out"
    code = run_cli("--model", tiny_model, "--cases", str(CASES), "--case", "text-only", "--case",
                   "two-images", "--out", str(out))
    assert code == 0
    (out / "index.html").unlink()
    assert main(["report", str(out / "results.json")]) == 0
    html = (out / "index.html").read_text()
    assert "two-images" in html and "text-only" in html


@pytest.mark.engine
def test_engine_that_cannot_start_exits_two_with_reason(tmp_path: Path, tiny_model: str) -> None:
    out = tmp_path / "out"
    code = run_cli("--model", str(tmp_path / "no-such-model"), "--reference-model", tiny_model,
                   "--cases", str(CASES), "--case", "text-only", "--out", str(out))
    assert code == 2
    run = read_results(out)
    assert run.status == "failed" and "failed to start" in run.error
    assert run.cases[0].verdict == "error" and case_lines(run.cases[0])[0].startswith("batched: engine failed")


def test_results_are_on_disk_after_every_case(tmp_path: Path, tiny_model: str) -> None:
    out = tmp_path / "out"
    seen = []

    def after_each_case(line: str) -> None:
        if line.startswith(("PASS", "FAIL", "ERROR")):
            seen.append(len(read_results(out).cases))

    cfg = RunConfig(cases=[CASES], out=out, engine=FAKE, model=tiny_model, only={"text-only", "tiny-png"})
    run = execute(cfg, after_each_case, launcher=inline)
    assert seen == [1, 2] and run.status == "complete"
    data = json.loads((out / "results.json").read_text())
    assert data["schema_version"] == SCHEMA_VERSION and data["provenance"]["model_sha256"] and data["status"] == "complete"


def test_unknown_case_id_is_an_error_and_an_empty_run_is_not_a_pass(tmp_path: Path, tiny_model: str) -> None:
    assert run_cli("--model", tiny_model, "--cases", str(CASES), "--case", "no-such-case",
                   "--out", str(tmp_path / "a")) == 1
    run = read_results(tmp_path / "a")
    assert run.cases[0].verdict == "error" and "no case 'no-such-case'" in run.cases[0].reasons[0]
    empty = tmp_path / "empty.yaml"
    empty.write_text("cases: []\n")
    assert run_cli("--model", tiny_model, "--cases", str(empty), "--out", str(tmp_path / "b")) == 2
