"""`vlm-parity repro`: one cell of a run as a folder that reproduces it from the folder alone (repro.py exits 1
while the cell fails) and a Markdown bug report; a run writes one per bug by default, linked from the report."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.cli import main
from harness.core.schema import RunResult
from harness.inputs.cases import load_cases
from harness.publish.results import read_results, write_results
from harness.repro import ReproError, bug_report, cell_lines, first_past_bound, variant_yaml, write_repro
from harness.run.options import RunConfig
from harness.run.variants import load_variants
from harness.runner import execute
from tests.conftest import CASES, FAKE
from tests.factories import synthetic_run

ROOT = Path(__file__).resolve().parents[1]


def run_repro(folder: Path, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """repro.py in a fresh interpreter, from a folder outside the project (the project's root on the path only
    for the tests' own engines, as a user's adapter package would be installed)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, str(folder / "repro.py")], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def a_failing_case(run: RunResult, case_id: str = "astronaut-420") -> str:
    """The synthetic run's first failing case, standing for a real case of the default suite (its source file
    and image), so its folder can be written."""
    case = next(c for c in run.cases if c.verdict == "fail")
    case.case_id, case.source = case_id, str(CASES / "default.yaml")
    case.images = [str(CASES / "images" / "astronaut_420.jpg")]
    return case_id


def test_every_packaged_variant_survives_the_trip_through_its_folder(tmp_path: Path) -> None:
    """A variant as the results describe it, written back as variants.yaml, loads as the same variant: the
    reproduction runs the path the run took, also for a variant from the user's own file."""
    import yaml

    packaged = load_variants()
    for name, variant in packaged.variants.items():
        file = tmp_path / f"{name}.yaml"
        file.write_text(yaml.safe_dump({"variants": {name: variant_yaml(variant.describe())}}))
        assert load_variants([file]).get(name).describe() == variant.describe(), name


def test_first_past_bound_is_the_first_position_over_it_else_the_largest() -> None:
    assert first_past_bound([None, 1e-6, 3e-3, 5e-2], 1e-3) == 2
    assert first_past_bound([None, 1e-6, 3e-4, 2e-4], 1e-3) == 2
    assert first_past_bound([None, 1e-6, 3e-4], None) == 2
    assert first_past_bound([None, None], 1e-3) is None


def test_a_cell_folder_holds_the_case_its_images_the_variant_and_a_bug_report(tmp_path: Path) -> None:
    run = synthetic_run(10)
    case_id = a_failing_case(run)
    out = write_repro(run, case_id, "batched", tmp_path / "cell")
    loaded = load_cases([out / "case.yaml"])
    assert not loaded.problems and [c.id for c in loaded.cases] == [case_id]
    original = next(c for c in load_cases([CASES / "default.yaml"]).cases if c.id == case_id)
    assert loaded.cases[0].messages == original.messages
    assert [p.read_bytes() for p in loaded.cases[0].images] == [p.read_bytes() for p in original.images]
    assert load_variants([out / "variants.yaml"]).get("batched").describe()["request"] == {}
    script = (out / "repro.py").read_text()
    compile(script, "repro.py", "exec")  # a valid Python file, whatever the prompt holds
    assert "'variant': 'batched'" in script and "'engine': 'vllm'" in script
    report = (out / "BUG_REPORT.md").read_text()
    case = run.case(case_id)
    assert report == bug_report(run, case, case.variants["batched"], run.variants[0],
                                {"model": "/models/tiny", "variant": "batched", "case": case_id}, out)
    assert "| prefill_max | reference |" in report and "| fail |" in report
    assert "## Versions and hardware" in report and "astronaut_420.jpg (" in report
    lines = cell_lines(case, case.variants["batched"])
    assert lines[0] == f"case {case_id} on batched: FAIL"
    assert any("prompt logprobs, first position past the bound" in line for line in lines), lines
    assert any(line.startswith("greedy output, engine:") for line in lines)


def test_repro_names_what_it_cannot_find(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = synthetic_run(10)
    with pytest.raises(ReproError, match="case 'nope' is not in the results"):
        write_repro(run, "nope", "batched", tmp_path / "x")
    with pytest.raises(ReproError, match="case 'case-0000' has no variant 'native' in the results"):
        write_repro(run, "case-0000", "native", tmp_path / "x")
    run.case("case-0000").source = str(tmp_path / "gone.yaml")
    with pytest.raises(ReproError, match="gone.yaml: the case file of 'case-0000' is not on this machine"):
        write_repro(run, "case-0000", "batched", tmp_path / "x")
    results = write_results(run, tmp_path / "run")
    assert main(["repro", "nope", "--variant", "batched", "--results", str(results)]) == 2
    assert "case 'nope' is not in the results" in capsys.readouterr().out


def test_a_failing_run_writes_one_reproduction_per_bug_linked_from_the_report_and_it_fails_alone(
        tmp_path: Path, tiny_model: str) -> None:
    """A fake engine whose prompt logprobs drift: the run writes OUT/repro/<case>-<variant>/ for the first cell of
    the group, the report's case detail links it, and repro.py, from that folder in a fresh interpreter, runs the
    cell again and exits 1; `vlm-parity repro` writes the same folder for any cell; `--repro-dir` every cell."""
    out = tmp_path / "out"
    args = ["run", "--engine", FAKE, "--reference-engine", FAKE, "--model", tiny_model, "--case", "astronaut-420",
            "--case", "tiny-png", "--variants", "base", "--engine-option", "drift=0.5", "--out", str(out)]
    assert main(args) == 1
    folders = sorted(p.name for p in (out / "repro").iterdir())
    assert folders == ["astronaut-420-batched"]  # both cases fail the same way: one bug, one folder
    html = (out / "index.html").read_text()
    assert 'href="repro/astronaut-420-batched/repro.py"' in html
    assert "vlm-parity repro tiny-png --variant batched --results" in html  # the other cell: the command
    done = run_repro(out / "repro" / "astronaut-420-batched", tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "case astronaut-420 on batched: FAIL" in done.stdout
    assert "prompt logprobs, first position past the bound" in done.stdout
    assert "greedy output, reference:" in done.stdout
    # By hand, for the other cell; and every failing cell with --repro-dir.
    assert main(["repro", "tiny-png", "--variant", "batched", "--results", str(out / "results.json"),
                 "--out", str(tmp_path / "by-hand")]) == 0
    assert (tmp_path / "by-hand" / "BUG_REPORT.md").is_file()
    assert main([*args, "--out", str(tmp_path / "again"), "--repro-dir", str(tmp_path / "all")]) == 1
    assert sorted(p.name for p in (tmp_path / "all").iterdir()) == ["astronaut-420-batched", "tiny-png-batched"]
    assert read_results(out / "results.json").case("tiny-png").verdict == "fail"


@pytest.mark.engine
def test_the_reject_then_reuse_cell_reproduces_from_its_folder_in_vllm(tmp_path: Path, tiny_model: str) -> None:
    """The real vLLM bug on record (the cell is `known` in the run): its folder's repro.py still fails, with the
    engine's own error, until vLLM is fixed."""
    run = execute(RunConfig(cases=[CASES], out=tmp_path / "run", model=tiny_model, only={"astronaut-420"},
                            variants=["reject-then-reuse"], localize="off"), progress=lambda _: None)
    assert run.case("astronaut-420").variants["reject-then-reuse"].verdict == "known"
    folder = write_repro(run, "astronaut-420", "reject-then-reuse", tmp_path / "cell")
    done = run_repro(folder, tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "on reject-then-reuse: ERROR" in done.stdout and "MultiModalCacheMissError" in done.stdout
    assert "known failure" in (folder / "BUG_REPORT.md").read_text()
