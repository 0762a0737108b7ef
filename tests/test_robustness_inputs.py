"""Robustness to bad input, and nothing lost: every bad case file or image a user could hand the harness
gives one error naming the file, the case and the field while the other cases load and run; nothing
outside the cases folder is opened; a run killed by SIGKILL leaves every completed case readable, and its
report says the run is partial. Fakes only for the orchestration (tests/fake_engine.py)."""
from __future__ import annotations

import io
import json
import os
import pickle
import shutil
import signal
import struct
import subprocess
import sys
import zlib
from collections.abc import Callable, Iterator
from dataclasses import asdict
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from markupsafe import escape
from PIL import Image, ImageFile

from harness.cli import main
from harness.core.notes import note
from harness.core.provenance import Provenance
from harness.core.schema import CaseResult, RunResult
from harness.inputs.cases import load_cases
from harness.publish.outcome import conclude
from harness.publish.positions import PositionStore
from harness.publish.report import publish
from harness.publish.results import LOG_NAME, RESULTS_NAME, ResultsSink, read_results
from harness.runner import RunConfig, execute
from tests.conftest import CASES, DEFAULT_CASES
from tests.factories import synthetic_run
from tests.inline import inline

FAKE = "tests.fake_engine:FakeEngine"
REPO = CASES.parent
HOSTILE = '<script>alert(1)</script><img src=x onerror="alert(2)">'

# Every `open` of a file in this process (builtins.open, os.open, PIL, imports), recorded while `_opened()` is on:
# audit hooks see them all and cannot be bypassed by a library opening files its own way.
_OPENED: list[str] | None = None


def _audit(event: str, args: tuple) -> None:
    if _OPENED is not None and event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
        _OPENED.append(os.fsdecode(args[0]))


sys.addaudithook(_audit)


@contextmanager
def _opened() -> Iterator[list[str]]:
    global _OPENED
    _OPENED = []
    try:
        yield _OPENED
    finally:
        _OPENED = None


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header declares `width` x `height` and that holds no pixel data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def jpeg_bytes() -> bytes:
    buf = io.BytesIO()
    Image.radial_gradient("L").convert("RGB").save(buf, "JPEG", quality=90)
    return buf.getvalue()


def write_file(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return path.name


def symlink(link: Path, target: Path) -> str:
    link.symlink_to(target)
    return link.name


def fifo(path: Path) -> str:
    os.mkfifo(path)
    return path.name


def float_tiff(path: Path) -> str:
    Image.fromarray(np.zeros((4, 4), np.float32)).save(path)  # a depth map, say
    return path.name


def real_image(path: Path) -> Path:
    Image.new("RGB", (8, 8), "red").save(path)
    return path


ESCAPES = "image paths must stay inside it (symlinks are followed); move or copy the image into that folder"
# name: (make the bad image inside `suite` (with `outside` beside it), return the YAML item; the expected message
# after "field 'images[0]': ", given the resolved suite folder).
BAD_IMAGES: dict[str, tuple[Callable[[Path, Path], str], Callable[[Path], str]]] = {
    "missing": (lambda s, o: "images/nope.png", lambda s: f"file not found: {s}/images/nope.png"),
    "empty": (lambda s, o: write_file(s / "empty.png", b""), lambda s: f"{s}/empty.png is empty (0 bytes)"),
    "truncated-jpeg": (lambda s, o: write_file(s / "cut.jpg", jpeg_bytes()[:len(jpeg_bytes()) // 2]),
                       lambda s: f"{s}/cut.jpg: image data is truncated or damaged "
                                 "(OSError: image file is truncated (13 bytes not processed))"),
    "jpeg-cut-in-header": (lambda s, o: write_file(s / "head.jpg", jpeg_bytes()[:100]),
                           lambda s: f"{s}/head.jpg: image data is truncated or damaged "
                                     "(OSError: Truncated File Read)"),
    "not-an-image": (lambda s, o: write_file(s / "notes.jpg", b"hello world, I am text"),
                     lambda s: f"{s}/notes.jpg: not an image (no image format PIL knows starts like this: "
                               "b'hello wo')"),
    "zero-width": (lambda s, o: write_file(s / "zero.png", png_header(0, 16)),
                   lambda s: f"{s}/zero.png: PIL recognises a PNG file but cannot read its header (zero width or "
                             "height, an unsupported bit depth or colour type, or a damaged header)"),
    "decompression-bomb": (lambda s, o: write_file(s / "bomb.png", png_header(10000, 10000)),
                           lambda s: f"{s}/bomb.png: declared size 10000x10000 = 100,000,000 pixels is over PIL's "
                                     "decompression-bomb limit of 89,478,485 pixels; not decoded: use a smaller image"),
    "huge-decompression-bomb": (lambda s, o: write_file(s / "huge.png", png_header(100000, 100000)),
                                lambda s: f"{s}/huge.png: declared size is over PIL's decompression-bomb limit; not "
                                          "decoded: Image size (10000000000 pixels) exceeds limit of 178956970 "
                                          "pixels, could be decompression bomb DOS attack."),
    "float-mode": (lambda s, o: float_tiff(s / "depth.tiff"),
                   lambda s: f"{s}/depth.tiff: unsupported pixel mode 'F' in this TIFF: the reference converts "
                             "images to 8-bit RGB; save it in one of 1, L, LA, P, PA, RGB, RGBA, CMYK, YCbCr, I;16, "
                             "I;16B, I;16L (an RGB or RGBA PNG is safest)"),
    "folder": (lambda s, o: "images", lambda s: f"{s}/images is not a regular file (a folder, FIFO or device)"),
    "fifo": (lambda s, o: fifo(s / "pipe.png"),
             lambda s: f"{s}/pipe.png is not a regular file (a folder, FIFO or device)"),
    "nul-byte": (lambda s, o: "a\x00b.png", lambda s: "'a\\x00b.png': not a usable path (embedded null byte)"),
    "symlink-loop": (lambda s, o: (symlink(s / "loop-b", s / "loop-a"), symlink(s / "loop-a", s / "loop-b"))[1],
                     lambda s: f"'loop-a': not a usable path (Symlink loop from '{s}/loop-a')"),
    # Escapes: refused before anything is opened (see test_escaping_image_path_is_refused_unopened).
    "dot-dot": (lambda s, o: "../outside/secret.png",
                lambda s: f"'../outside/secret.png' resolves to {s.parent}/outside/secret.png, outside {s}, "
                          f"the folder of the case file: {ESCAPES}"),
    "dot-dot-through-a-folder": (lambda s, o: "images/../../outside/secret.png",
                                 lambda s: f"'images/../../outside/secret.png' resolves to {s.parent}/outside/"
                                           f"secret.png, outside {s}, the folder of the case file: {ESCAPES}"),
    "etc-passwd-climb": (lambda s, o: "../../../../../../../../etc/passwd",
                         lambda s: f"'../../../../../../../../etc/passwd' resolves to /etc/passwd, outside {s}, "
                                   f"the folder of the case file: {ESCAPES}"),
    "absolute-outside": (lambda s, o: str(o / "secret.png"),
                         lambda s: f"'{s.parent}/outside/secret.png' resolves to {s.parent}/outside/secret.png, "
                                   f"outside {s}, the folder of the case file: {ESCAPES}"),
    "symlinked-file": (lambda s, o: symlink(s / "link.png", o / "secret.png"),
                       lambda s: f"'link.png' resolves to {s.parent}/outside/secret.png, outside {s}, the folder "
                                 f"of the case file: {ESCAPES}"),
    "symlinked-folder": (lambda s, o: symlink(s / "shared", o) + "/secret.png",
                         lambda s: f"'shared/secret.png' resolves to {s.parent}/outside/secret.png, outside {s}, "
                                   f"the folder of the case file: {ESCAPES}"),
}


def suite(tmp_path: Path, bad_case: str) -> Path:
    """A cases folder with a good case, then `bad_case` (YAML text); a valid image `outside` it, beside it."""
    folder, outside = tmp_path / "suite", tmp_path / "outside"
    (folder / "images").mkdir(parents=True)
    outside.mkdir()
    real_image(folder / "images" / "good.png")
    real_image(outside / "secret.png")
    path = folder / "cases.yaml"
    path.write_text("cases:\n  - {id: good, images: [images/good.png], prompt: Describe it.}\n" + bad_case)
    return path


def one_bad(path: Path) -> str:
    """Load `path`: the good case survives; the single problem, as the user sees it."""
    loaded = load_cases([path])
    assert [c.id for c in loaded.cases] == ["good"]
    assert len(loaded.problems) == 1, [str(p) for p in loaded.problems]
    return str(loaded.problems[0])


@pytest.mark.parametrize("name", sorted(BAD_IMAGES))
def test_bad_image_names_file_case_field_and_what_to_do(tmp_path: Path, name: str) -> None:
    make, message = BAD_IMAGES[name]
    folder, outside = (tmp_path / "suite").resolve(), (tmp_path / "outside").resolve()
    path = suite(tmp_path, "")
    item = make(folder, outside)
    with path.open("a") as f:
        f.write(f"  - id: bad\n    images: [{json.dumps(item)}]\n    prompt: Describe it.\n")
    with _opened() as opened:
        problem = one_bad(path)
    assert problem == f"{path}: case 'bad': field 'images[0]': {message(folder)}"
    # Nothing outside the cases folder is ever opened (the secret is a valid image: it would have loaded).
    assert [p for p in opened if p.startswith(str(outside)) or p == "/etc/passwd"] == []


def test_escaping_image_path_is_refused_unopened_and_inside_paths_are_fine(tmp_path: Path) -> None:
    path = suite(tmp_path, "  - {id: out, images: [../outside/secret.png], prompt: hi}\n"
                           "  - {id: in, images: [images/../images/good.png], prompt: hi}\n")
    (tmp_path / "suite" / "abs.yaml").write_text(
        f"cases:\n  - {{id: abs, images: [{tmp_path.resolve()}/suite/images/good.png], prompt: hi}}\n")
    with _opened() as opened:
        loaded = load_cases([path.parent])
    assert sorted(c.id for c in loaded.cases) == ["abs", "good", "in"]
    assert [(p.case_id, p.field) for p in loaded.problems] == [("out", "images[0]")]
    secret = str((tmp_path / "outside" / "secret.png").resolve())
    assert secret not in opened and f"{tmp_path.resolve()}/suite/images/good.png" in opened  # the hook does see opens


def test_decompression_bomb_is_refused_from_its_header_without_decoding(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    path = suite(tmp_path, "  - {id: bad, images: [bomb.png], prompt: hi}\n")
    write_file(path.parent / "bomb.png", png_header(10000, 10000))
    decoded: list[str] = []
    load = ImageFile.ImageFile.load
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda im: decoded.append(im.filename) or load(im))
    assert "decompression-bomb limit" in one_bad(path)
    assert decoded == [str((path.parent / "images" / "good.png").resolve())]  # the good image only


# name: (the case file's text after "cases:\n" and the good case, the expected problem after the file's path)
BAD_YAML: dict[str, tuple[str, str]] = {
    "invalid-yaml": ("  - {id: x, prompt: [unclosed\n",
                     "invalid YAML at line 4, column 1: expected ',' or ']', but got '<stream end>' "
                     "(while parsing a flow sequence)"),
    "bad-indentation": ("  - id: x\n   prompt: hi\n",
                        "invalid YAML at line 4, column 4: expected <block end>, but found '<block mapping start>' "
                        "(while parsing a block collection)"),
    "tab-indentation": ("\t- id: x\n",
                        "invalid YAML at line 3, column 1: found character '\\t' that cannot start any token "
                        "(while scanning for the next token)"),
    "python-tag": ("  - !!python/object/apply:os.system [touch pwned]\n",
                   "invalid YAML at line 3, column 5: could not determine a constructor for the tag "
                   "'tag:yaml.org,2002:python/object/apply:os.system'"),
}


@pytest.mark.parametrize("name", sorted(BAD_YAML))
def test_unreadable_case_file_is_one_named_problem_and_other_files_still_load(tmp_path: Path, name: str) -> None:
    text, message = BAD_YAML[name]
    good = suite(tmp_path, "")
    bad = good.parent / "more.yaml"
    bad.write_text("cases:\n  - {id: fine, prompt: hi}\n" + text)
    loaded = load_cases([good.parent])
    assert [c.id for c in loaded.cases] == ["good"]
    assert [str(p) for p in loaded.problems] == [f"{bad}: {message}"]
    assert not (Path.cwd() / "pwned").exists() and not (good.parent / "pwned").exists()


# name: (one bad case, the expected problem after "<file>: ")
BAD_CASES: dict[str, tuple[str, str]] = {
    "unknown-key": ("{id: c, prompt: hi, max_new_token: 8}", "case 'c': field 'max_new_token': unknown key"),
    "images-not-a-list": ("{id: c, images: images/good.png, prompt: hi}",
                          "case 'c': field 'images': must be a list of file paths"),
    "no-prompt": ("{id: c, images: [images/good.png]}", "case 'c': field 'prompt': required"),
    "max-new-tokens-negative": ("{id: c, prompt: hi, max_new_tokens: -1}",
                                "case 'c': field 'max_new_tokens': must be an integer from 1 to 4096, got -1"),
    "threshold-nan": ("{id: c, prompt: hi, thresholds: {prefill_max: .nan}}",
                      "case 'c': field 'thresholds.prefill_max': must be a number, got nan"),
    "image-count-mismatch": ("{id: c, images: [images/good.png], prompt: [{role: user, content: hi}]}",
                             "case 'c': field 'prompt': has 0 image parts but the case has 1 images"),
    "bad-role": ("{id: c, prompt: [{role: robot, content: hi}]}",
                 "case 'c': field 'prompt[0].role': must be one of system, user, assistant, got 'robot'"),
    "duplicate-id": ("{id: good, prompt: hi}", "case 'good': field 'id': duplicate id, first defined in {path}"),
    "id-with-spaces": ("{id: 'my case', prompt: hi}", "case 'my case': field 'cases[1].id': must match "
                                                      "[A-Za-z0-9][A-Za-z0-9._-]*"),
    "no-id": ("{prompt: hi}", "field 'cases[1].id': required"),
}


@pytest.mark.parametrize("name", sorted(BAD_CASES))
def test_schema_violation_names_file_case_and_field(tmp_path: Path, name: str) -> None:
    case, message = BAD_CASES[name]
    path = suite(tmp_path, f"  - {case}\n")
    assert one_bad(path) == f"{path}: " + message.format(path=path)


def test_yaml_alias_bomb_gives_a_short_message(tmp_path: Path) -> None:
    """Nested aliases expand to millions of items; the message quoting the value must stay short."""
    levels = ['a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    levels += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    path = suite(tmp_path, "  - {id: c, prompt: hi, max_new_tokens: *a8}\n")
    path.write_text("\n".join(levels) + "\n" + path.read_text())
    problems = {p.field: str(p) for p in load_cases([path]).problems}
    assert problems["max_new_tokens"].startswith(f"{path}: case 'c': field 'max_new_tokens': must be an integer "
                                                 "from 1 to 4096, got [[[...], [...], [...], [...], ...], "
                                                 "[[...], [...], [...], [...], ...], [[...], [...], [...], [...], "
                                                 "...], [[...], [...], [...], [...], ...], ...]")
    assert max(len(p) for p in problems.values()) < 300


def test_bad_case_is_an_error_in_the_run_and_report_and_the_others_pass(tmp_path: Path, tiny_model: str) -> None:
    folder = tmp_path / "suite"
    (folder / "images").mkdir(parents=True)
    for name in ("tiny.png", "gradient.png"):
        shutil.copy(CASES / "images" / name, folder / "images")
    write_file(folder / "images" / "cut.jpg", jpeg_bytes()[:len(jpeg_bytes()) // 2])
    (folder / "cases.yaml").write_text("""cases:
  - {id: tiny, images: [images/tiny.png], prompt: Describe it.}
  - {id: broken, images: [images/cut.jpg], prompt: Describe it.}
  - {id: gradient, images: [images/gradient.png], prompt: Which colours are there.}
  - {id: text, prompt: Hello.}
""")
    out = tmp_path / "out"
    run = execute(RunConfig(cases=[folder], out=out, engine=FAKE, reference_engine=FAKE, model=tiny_model,
                            variants=["base"]), progress=lambda _: None, launcher=inline)
    verdicts = {c.case_id: c.verdict for c in run.cases}
    assert verdicts == {"broken": "error", "tiny": "pass", "gradient": "pass", "text": "pass"}
    broken = run.case("broken")
    reason = (f"invalid case: {folder}/cases.yaml: case 'broken': field 'images[0]': "
              f"{folder.resolve()}/images/cut.jpg: image data is truncated or damaged (OSError: image file is "
              "truncated (13 bytes not processed))")
    assert broken.reasons == [reason]
    assert broken.variants == {} and broken.reference is None  # no engine ever saw it
    html = publish(run, out).html.read_text()
    assert 'data-case="broken" data-verdict="error"' in html and str(escape(reason)) in html
    assert read_results(out).case("broken").reasons == [reason]


# --- nothing lost: results.jsonl ---------------------------------------------------------------------------------

def fake_run(out: Path, tiny_model: str, progress: Callable[[str], None] = lambda _: None,
             only: set[str] | None = None) -> RunResult:
    return execute(RunConfig(cases=[CASES], out=out, engine=FAKE, reference_engine=FAKE, model=tiny_model,
                             variants=["base"], only=only or {"astronaut-420", "two-images", "text-only"}), progress,
                   launcher=inline)


def log_records(out: Path) -> list[dict]:
    """The log's whole lines, parsed without the harness's reader."""
    return [json.loads(line) for line in (out / LOG_NAME).read_text().split("\n")[:-1]]


def test_each_case_is_appended_as_it_completes_and_results_json_written_at_the_end(tmp_path: Path,
                                                                                   tiny_model: str) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / RESULTS_NAME).write_text('{"stale": "from an earlier run"}')
    seen: list[tuple[int, bool]] = []
    logs: list[str] = []

    def progress(line: str) -> None:
        if line.startswith(("PASS", "FAIL", "ERROR")):
            seen.append((sum(r["record"] == "case" for r in log_records(out)), (out / RESULTS_NAME).exists()))
            logs.append((out / LOG_NAME).read_text())

    run = fake_run(out, tiny_model, progress)
    assert seen == [(1, False), (2, False), (3, False)]  # on disk before the next case; no stale results.json
    # Each case's per-position data is in the store before its line: the log names the file.
    for line in logs[-1].split("\n")[1:-1]:
        assert (out / json.loads(line)["case"]["positions"]).is_file()
    # The finished run is results.json alone: the log it was spliced from is gone, never the same data twice.
    assert not (out / LOG_NAME).exists()
    from_log = read_results(_log(tmp_path, logs[-1]))
    from_json = read_results(out / RESULTS_NAME)
    assert from_log.status == "partial" and [c.case_id for c in from_log.cases] == [c.case_id for c in run.cases]
    assert [asdict(c) for c in from_log.cases] == [asdict(c) for c in from_json.cases]
    assert from_json.status == "complete" and from_json.to_dict() == read_results(out).to_dict()
    # Read back with its per-position data, a case is the one the judge made.
    full = PositionStore(out).load(from_json.cases[0])
    assert full.reference.prompt_logprobs and full.variants["batched"].comparison.prefill_diffs


def _log(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "copy" / LOG_NAME
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    return path


def stopped_run(tmp_path: Path, tiny_model: str) -> Path:
    """A run's folder as a kill after its second case leaves it: the log as it was while the third case was
    being appended (no final record, no results.json, half of the third case's line)."""
    out = tmp_path / "out"
    logs: list[str] = []
    fake_run(out, tiny_model, lambda line: logs.append((out / LOG_NAME).read_text()) if line.startswith(
        ("PASS", "FAIL", "ERROR")) else None)
    lines = logs[-1].split("\n")
    (out / LOG_NAME).write_text("\n".join(lines[:3]) + "\n" + lines[3][:50])
    (out / RESULTS_NAME).unlink()
    for name in ("index.html", "cases.parquet", "cases.csv"):
        (out / name).unlink(missing_ok=True)
    return out


def test_stopped_run_reads_as_partial_and_report_and_gate_say_so(tmp_path: Path, tiny_model: str,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    out = stopped_run(tmp_path, tiny_model)
    run = read_results(out)
    assert run.status == "partial" and run.verdict == "error" and len(run.cases) == 2
    assert run.error == ("the run stopped before it ended (killed or crashed); 2 case result(s) were written "
                         "before it stopped")
    assert main(["report", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("PARTIAL run: it stopped before it ended; 2 case result(s) completed and are in the "
                              "report\n")
    html = (out / "index.html").read_text()
    assert '<div class="banner" id="partial"><strong>PARTIAL RUN: the run stopped before it ended (killed or ' \
           'crashed).</strong> The 2 case results written before it stopped are shown below' in html
    assert html.count('<tbody class="case v-') == 2
    # The gate never passes an unfinished run, whether given the folder or the results.json it lacks.
    for target in (out, out / RESULTS_NAME):
        assert main(["gate", str(target)]) == 2
        assert "gate (default): CANNOT DECIDE\n  - run did not complete (status partial): the run stopped" in \
            capsys.readouterr().out


def test_damaged_log_line_is_an_error_naming_the_line_and_a_repeated_case_takes_the_last(tmp_path: Path) -> None:
    out = tmp_path / "out"
    run = RunResult(provenance=Provenance(engine="fake"))
    sink = ResultsSink(run, out)
    sink.write()
    sink.add(CaseResult(case_id="a", verdict="error", reasons=["first try"]))
    sink.add(CaseResult(case_id="b", verdict="pass"))
    sink.add(CaseResult(case_id="a", verdict="pass"))
    again = read_results(out)
    assert [(c.case_id, c.verdict) for c in again.cases] == [("a", "pass"), ("b", "pass")]
    lines = (out / LOG_NAME).read_text().split("\n")
    lines[2] = lines[2][:40]
    (out / LOG_NAME).write_text("\n".join(lines))
    with pytest.raises(ValueError, match=rf"^{out / LOG_NAME}: line 3: not valid JSON: "):
        read_results(out)
    (out / LOG_NAME).write_text('{"record": "case", "case": {"case_id": "a", "verdict": "pass"}}\n')
    with pytest.raises(ValueError, match=rf"^{out / LOG_NAME}: no run record: not a vlm-parity results log$"):
        read_results(out)


def test_results_are_json_only_never_unpickled(tmp_path: Path) -> None:
    class Boom:
        def __reduce__(self) -> tuple:
            return (Path.touch, (tmp_path / "pwned",))

    for name in (RESULTS_NAME, LOG_NAME):
        (tmp_path / name).write_bytes(pickle.dumps(Boom()))
        with pytest.raises(ValueError, match="not UTF-8 text|not valid JSON"):
            read_results(tmp_path / name)
    assert not (tmp_path / "pwned").exists()


def test_sigkill_leaves_every_completed_case_readable_and_the_report_partial(
        tmp_path: Path, tiny_model: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`vlm-parity run` killed -9 part way: the report shows exactly the cases written, including every case
    the run announced as done (it announces a case after its line is on disk)."""
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "harness.cli", "run", "--engine", FAKE, "--reference-engine", FAKE,
           "--model", tiny_model, "--variants", "base", "--engine-option", "delay_s=0.5", "--verbose", "--out", str(out)]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    announced: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith(("PASS", "FAIL", "ERROR")):
                announced.append(line.split()[1])
                if len(announced) == 3:
                    break
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait() == -signal.SIGKILL
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # its engine worker, started in the same session
        except ProcessLookupError:
            pass
    written = [r["case"]["case_id"] for r in log_records(out) if r["record"] == "case"]
    assert len(announced) == 3 and written[:3] == announced and len(written) < DEFAULT_CASES
    assert not (out / RESULTS_NAME).exists()
    for case in read_results(out).cases:  # every completed case's per-position data, whole, in the store
        assert PositionStore(out).load(case).reference.prompt_logprobs, case.case_id
    assert main(["report", str(out)]) == 0
    assert f"PARTIAL run: it stopped before it ended; {len(written)} case result(s) completed" in \
        capsys.readouterr().out
    html = (out / "index.html").read_text()
    assert [part.split('"', 1)[0] for part in html.split('<tbody class="case v-')[1:]] == \
        [c.verdict for c in read_results(out).cases]
    assert [part.split('"', 1)[0] for part in html.split('data-case="')[1:]] == written
    assert 'id="partial"' in html


def report_with(text: str, folder: Path) -> str:
    """A report (the second of two runs, so it has history trends) with `text` in every untrusted field."""
    run = synthetic_run(3)
    case = run.cases[0]
    case.reasons.append(text)
    case.notes.append(note("stale_reference", state="stale", file=text, changes=[text]))
    case.images = [text]
    case.reference.output_text = text
    case.tokens = {}  # outputs shown as text, not token by token
    case.variants["batched"].engine.output_text = text
    case.variants["batched"].reasons.append(text)
    case.variants["batched"].notes.append(note("engine_error", attempt=0, type=None, message=text))
    run.error, run.notes, run.skipped = text, [note("no_floor", reason=text)], {"x": text}
    run.variants[0]["reason"] = text
    run.provenance.model, run.provenance.git_commit, run.provenance.engine_info = text, text, {"build": text}
    publish(run, folder / "first", conclude(run, folder / "history.jsonl"))
    return publish(run, folder / "second", conclude(run, folder / "history.jsonl")).html.read_text()


def test_untrusted_text_is_escaped_everywhere_in_the_report(tmp_path: Path) -> None:
    """Model output, case text, engine errors, provenance and history labels all reach the page as text."""
    html = report_with(HOSTILE, tmp_path / "hostile")
    plain = report_with("plain words", tmp_path / "plain")
    assert 'id="trend-data"' in html  # the history labels (with the git commit) are on the page
    assert HOSTILE not in html and "<script>alert" not in html and 'onerror="alert' not in html
    assert html.count("&lt;script&gt;alert(1)&lt;/script&gt;") >= 10
    for tag in ("<script", "</script", "<img", "<table", "<div", "<li"):
        assert html.count(tag) == plain.count(tag), tag
