"""Stored references: content keys, staleness named by field, atomic writes, no overwrite without
--update, a stored run without transformers, and stored == live on the default suite."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml

from harness import config
from harness.cli import main
from harness.core.files import write_atomic
from harness.core.schema import METRIC_INFO, EngineOutput
from harness.inputs.cases import load_cases
from harness.inputs.models import default_model_dir, image_token_id
from harness.judging.compare import compare_outputs, judge
from harness.judging.compare.floor import floor_key
from harness.judging.explain import case_lines, finding_text, warning_lines
from harness.record import RecordConfig, record, select
from harness.run.references import DEFAULT_DIR, ReferenceStore, StoredReference, changed_fields, dump
from harness.runner import RunConfig, execute
from tests.conftest import CASES, DEFAULT_CASES, FAKE
from tests.inline import inline

IMAGE_TOKEN = image_token_id(str(default_model_dir()))


def copy_cases(tmp_path: Path) -> Path:
    """The default cases in a folder of their own, to edit."""
    target = tmp_path / "cases"
    shutil.copytree(CASES, target, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    return target


def single_use_image(cases: Path) -> tuple[str, Path]:
    """A case whose first image, a JFIF JPEG, no other case uses, and that image."""
    loaded = load_cases([cases]).cases
    uses = Counter(p for c in loaded for p in c.images)
    case = next(c for c in loaded if c.images and uses[c.images[0]] == 1 and c.images[0].read_bytes()[6:10] == b"JFIF")
    return case.id, case.images[0]


def flip_byte(path: Path) -> None:
    """One byte of the JFIF header's pixel density: other bytes, the same pixels, a valid image."""
    data = bytearray(path.read_bytes())
    data[15] ^= 0x02
    path.write_bytes(bytes(data))


def states(cases: Path, references: Path = DEFAULT_DIR) -> dict[str, object]:
    return select(RecordConfig([cases], references_dir=references)).statuses


def test_committed_references_are_fresh_for_the_default_cases() -> None:
    found = states(CASES)
    assert len(found) == DEFAULT_CASES
    stale = {case: status.describe() for case, status in found.items() if status.state != "fresh"}
    assert not stale, f"re-record with `vlm-parity record --update`: {stale}"


def test_one_changed_byte_makes_exactly_that_case_stale_with_the_reason(tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    cases = copy_cases(tmp_path)
    case_id, image = single_use_image(cases)
    flip_byte(image)
    found = states(cases)
    assert {c for c, s in found.items() if s.state != "fresh"} == {case_id}
    assert found[case_id].state == "stale" and found[case_id].changes == ["image bytes of images[0]"]
    assert main(["references", "check", "--cases", str(cases)]) == 1
    out = capsys.readouterr().out
    assert f"STALE   {case_id}: stale ({case_id}." in out and "changed: image bytes of images[0]" in out


def test_renaming_a_case_keeps_its_reference(tmp_path: Path) -> None:
    cases = copy_cases(tmp_path)
    yaml_file = cases / "default.yaml"
    yaml_file.write_text(yaml_file.read_text().replace("id: astronaut-420", "id: astronaut-renamed"))
    found = states(cases)
    assert found["astronaut-renamed"].state == "fresh"
    assert found["astronaut-renamed"].reference.case_id == "astronaut-420"


def test_edits_are_named_by_field() -> None:
    old = {"messages": "a", "processor": "p", "images": ["x", "y"], "max_new_tokens": 16, "top_k": 5,
           "dtype": "float32"}
    assert changed_fields(old, {**old, "messages": "b", "max_new_tokens": 8}) == [
        "prompt (the case's chat messages)", "max_new_tokens (16 -> 8)"]
    assert changed_fields(old, {**old, "images": ["x"], "dtype": "bfloat16"}) == [
        "number of images (2 -> 1)", "dtype (float32 -> bfloat16)"]
    assert changed_fields(old, {**old, "processor": "q", "images": ["x", "z"]}) == [
        "processor, tokenizer or chat template files", "image bytes of images[1]"]


def test_stored_mode_makes_a_stale_case_an_error_and_runs_the_rest(tmp_path: Path) -> None:
    cases = copy_cases(tmp_path)
    case_id, image = single_use_image(cases)
    flip_byte(image)
    run = execute(RunConfig(cases=[cases], out=tmp_path / "out", engine=FAKE, variants=["base"], reference="stored"),
                  progress=lambda _: None, launcher=inline)
    stale = run.case(case_id)
    assert stale.verdict == "error" and stale.reference_stale == ["image bytes of images[0]"]
    (why,) = stale.notes  # a record of what changed, rendered where it is shown
    assert (why.kind, why.level, why.data["state"]) == ("stored_reference_unusable", "error", "stale")
    assert why.data["changes"] == ["image bytes of images[0]"] and why.data["file"].startswith(f"{case_id}.")
    assert case_lines(stale) == [f"reference_stale: stale ({why.data['file']}): changed: image bytes of images[0]"]
    others = [c for c in run.cases if c.case_id != case_id]
    assert len(others) == DEFAULT_CASES - 1 and all(c.reference_source.startswith("stored: ") for c in others)
    assert all(c.verdict != "error" for c in others)  # judged (the fake engine fails them), not lost
    assert json.loads((tmp_path / "out" / "results.json").read_text())["provenance"]["references_stored"] == len(others)


@pytest.mark.engine
def test_auto_mode_runs_a_stale_case_live_and_says_why(tmp_path: Path) -> None:
    cases = copy_cases(tmp_path)
    case_id, image = single_use_image(cases)
    flip_byte(image)
    keep = {case_id, "text-only"}
    run = execute(RunConfig(cases=[cases], out=tmp_path / "out", engine=FAKE, variants=["base"], only=keep),
                  progress=lambda _: None, launcher=inline)
    stale, fresh = run.case(case_id), run.case("text-only")
    assert stale.reference_source == "live" and stale.reference is not None and not stale.reference.error
    warning = stale.notes[0]
    assert (warning.kind, warning.data["changes"]) == ("stale_reference", ["image bytes of images[0]"])
    assert warning_lines(stale)[0] == (f"stored reference stale ({warning.data['file']}): changed: image bytes of "
                                       "images[0]: the reference ran live")
    assert fresh.reference_source.startswith("stored: text-only.") and not fresh.reference_stale


def test_a_stored_run_imports_neither_transformers_nor_torch(tmp_path: Path) -> None:
    script = f"""
import sys
from pathlib import Path
from harness.publish.report import publish
from harness.runner import RunConfig, execute
run = execute(RunConfig(cases=[Path({str(CASES)!r})], out=Path({str(tmp_path)!r}), engine={FAKE!r},
                        variants=["base"], reference="stored"), progress=lambda _: None)
publish(run, Path({str(tmp_path)!r}))
assert len(run.cases) == {DEFAULT_CASES} and all(c.reference_source.startswith("stored") for c in run.cases)
print(sorted(m for m in sys.modules if m.split(".")[0] in ("transformers", "torch")))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_write_atomic_leaves_no_half_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "ref.json"
    target.write_text("old")

    def killed(*_: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        write_atomic(target, "new")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["ref.json"]


def test_dump_is_json_with_one_line_per_position_and_exact_floats() -> None:
    value = {"outputs": {"reference": {"prompt_logprobs": [None, {"token_id": 3, "logprob": -0.1 / 3,
                                                                  "top": [[3, -0.1 / 3]]}]}}}
    text = dump(value)
    assert json.loads(text) == value
    assert '  {"token_id":3,"logprob":-0.03333333333333333,"top":[[3,-0.03333333333333333]]}' in text


def within_floor(stored: StoredReference, ours: EngineOutput) -> list[str]:
    """What fails when `ours` (recomputed on this machine) is judged against a stored reference with its
    float32 floor: another CPU changes the last bits, never more than the floor allows."""
    cmp = compare_outputs(stored.outputs["reference"], ours, IMAGE_TOKEN)
    th = config.resolve(config.load_config(), "float32")
    return [finding_text(f) for f in judge(cmp, th, stored.floors["float32"]) if f.level == "fail"]


@pytest.mark.engine
def test_record_is_deterministic_here_agrees_with_the_committed_within_the_floor_and_keeps(tmp_path: Path) -> None:
    """Recorded twice on this machine: identical files but for the date. Against the committed files (recorded
    on another CPU, maybe): the same keys, token ids and outputs, and logprobs within the committed floor."""
    cases = copy_cases(tmp_path)
    case_file = cases / "default.yaml"
    doc = yaml.safe_load(case_file.read_text())
    # rocket-exif6 also records the re-run with transformers' decoder (its pixels differ from PIL's)
    doc["cases"] = [c for c in doc["cases"] if c["id"] in ("text-only", "rocket-exif6")]
    case_file.write_text(yaml.safe_dump(doc))
    for other in cases.glob("*.yaml"):
        if other != case_file:
            other.unlink()
    first, second = tmp_path / "refs", tmp_path / "again"
    assert record(RecordConfig([cases], references_dir=first), progress=lambda _: None) == 0
    assert record(RecordConfig([cases], references_dir=second), progress=lambda _: None) == 0
    written = sorted((first / "tiny-qwen2-vl-trained").glob("*.*.json"))
    assert len(written) == 2 and "reference-transformers" in json.loads(written[0].read_text())["outputs"]
    store = ReferenceStore(DEFAULT_DIR, "tiny-qwen2-vl-trained", str(default_model_dir()))
    for path in written:
        mine, again = (json.loads(p.read_text()) for p in (path, second / "tiny-qwen2-vl-trained" / path.name))
        for data in (mine, again):
            del data["provenance"]["date"], data["provenance"]["case_file"]
        assert mine == again, f"{path.name}: recording twice on one machine gave different files"
        committed, ours = store.load(DEFAULT_DIR / "tiny-qwen2-vl-trained" / path.name), store.load(path)
        # A floor per engine dtype, and per dtype for each re-run of the reference (its own prompt, its own floor).
        reruns = {name for name in ours.outputs if name.startswith("reference-")}
        assert set(ours.floors) == {floor_key(d, r) for d in ("float32", "bfloat16", "float16")
                                    for r in (None, *reruns)} and ours.provenance["hardware"]["cpu"]
        assert ours.prompt_text == committed.prompt_text and set(ours.outputs) == set(committed.outputs)
        for name, output in ours.outputs.items():
            assert output.prompt_ids == committed.outputs[name].prompt_ids, (path.name, name)
            assert output.output_ids == committed.outputs[name].output_ids, (path.name, name)
        assert within_floor(committed, ours.outputs["reference"]) == [], path.name

    config = RecordConfig([cases], references_dir=first)
    before = {p: p.stat().st_mtime_ns for p in written}
    log: list[str] = []
    assert record(config, progress=log.append) == 0
    assert {p: p.stat().st_mtime_ns for p in written} == before
    assert sum(line.startswith("KEPT") for line in log) == 2

    doc["cases"][0]["max_new_tokens"] = 4
    case_file.write_text(yaml.safe_dump(doc))
    edited = doc["cases"][0]["id"]
    assert states(cases, first)[edited].changes == ["max_new_tokens (16 -> 4)"]
    config.update = True
    log.clear()
    assert record(config, progress=log.append) == 0
    assert any(line.startswith(f"REMOVED {edited}.") for line in log)
    assert all(s.state == "fresh" for s in states(cases, first).values())
    assert len(list((first / "tiny-qwen2-vl-trained").glob(f"{edited}.*.json"))) == 1


def test_a_reference_from_other_hardware_is_fresh_and_says_where_it_was_recorded(tmp_path: Path) -> None:
    """The hardware is provenance, never staleness: the committed files hold the CPU they were recorded on."""
    cases = copy_cases(tmp_path)
    refs = tmp_path / "refs"
    shutil.copytree(DEFAULT_DIR, refs)
    for path in (refs / "tiny-qwen2-vl-trained").glob("*.*.json"):
        data = json.loads(path.read_text())
        data["provenance"]["hardware"] = {"cpu": "Some Other CPU", "vector_extensions": ["avx512f", "amx_bf16"]}
        path.write_text(dump(data))
    assert all(s.state == "fresh" for s in states(cases, refs).values())


@pytest.mark.engine
def test_stored_and_live_give_the_same_verdicts_and_metrics_within_the_floor(tmp_path: Path) -> None:
    """HF as the engine, against the live HF reference and against the stored one (recorded on whatever CPU
    committed it): the same verdicts, and every metric within its case's floor of the other."""
    common = dict(cases=[CASES], variants=["base"], engine="hf", only={"astronaut-420", "two-images", "text-only",
                                                                        "rocket-exif6"})
    live = execute(RunConfig(out=tmp_path / "live", reference="live", **common), progress=lambda _: None,
                   launcher=inline)
    stored = execute(RunConfig(out=tmp_path / "stored", reference="stored", **common), progress=lambda _: None,
                     launcher=inline)
    assert live.provenance.references_live == stored.provenance.references_stored == 4
    by_id = {c.case_id: c for c in stored.cases}
    for case in live.cases:
        other = by_id[case.case_id]
        assert case.verdict == other.verdict == "pass", (case.case_id, case_lines(case), case_lines(other))
        assert case.reference.prompt_ids == other.reference.prompt_ids
        assert case.reference.output_ids == other.reference.output_ids
        for name, check in other.comparison.checks.items():
            mine = case.comparison.checks[name]
            assert mine.level == check.level, (case.case_id, name)
            if check.bound is not None and METRIC_INFO.get(name, {}).get("better") == "lower":
                assert abs(mine.value - check.value) <= check.bound, (case.case_id, name, mine.value, check.value)
        assert case.tokens == other.tokens
        assert [n.kind for n in case.notes] == [n.kind for n in other.notes]  # the same warnings (values may differ)


def test_a_thresholds_file_is_layered_over_the_packaged_one(tmp_path: Path) -> None:
    """The converted-checkpoint workflow's per-model thresholds: only what changes is written."""
    from harness import config

    path = tmp_path / "thresholds.yaml"
    path.write_text('models:\n  "*-awq":\n    bfloat16:\n      prefill_max: {value: 0.5, reason: "4-bit weights"}\n')
    layered = config.load_config(path)
    converted = config.resolve(layered, "bfloat16", "/ckpt/original-awq")
    assert converted["prefill_max"] == 0.5 and converted.reasons["prefill_max"] == "model override (*-awq): 4-bit weights"
    packaged = config.load_config()
    assert config.resolve(layered, "float32", "/ckpt/original") == config.resolve(packaged, "float32", "/ckpt/original")
