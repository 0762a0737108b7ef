"""Every built-in architecture: its parts found by role, and the zoo's table, gate and history.

The stage ladder must work on every architecture, not only the one it was written on: each architecture's
engine-side copy gets its vision tower's weights perturbed (the projector left alone), the HF engine serves it
in this process against the original, and the ladder must name the vision encoder's output as the first stage
that differs (or, where the architecture has no separate projector to read the encoder's output from, the image
features, with the encoder's reason). No process starts: vLLM's own module tree is covered by the engine tier.
"""
from __future__ import annotations

import json
import multiprocessing
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from harness.engines.capture import PROJECTORS, VISION_WORDS
from harness.inputs.models import MODELS, model_dir
from harness.judging.explain import case_lines, ladder_text
from harness.localize import run as localize_run
from harness.publish.gate import gate_file, load_gate_config
from harness.publish.zoo import ZooRow, read_zoo, table_rows, verdict, write_zoo
from harness.runner import RunConfig, execute
from tests.conftest import CASES
from tests.inline import inline, inline_probe

# One architecture per recipe family (the trained model and the one-head LFM2-VL share theirs).
ARCHITECTURES = sorted({r.architecture: name for name, r in reversed(MODELS.items()) if r.kind == "built"}.values())
IMAGE_CASES = {"rocket-420-wide", "two-images"}  # a wide image; two images in one prompt


def vision_keys(tensors: dict[str, torch.Tensor]) -> list[str]:
    """The vision tower's floating-point weights, found by role: under a vision module, not in a projector."""
    return [k for k, t in tensors.items() if t.is_floating_point() and any(w in k for w in VISION_WORDS)
            and not any(p in k for p in PROJECTORS)]


def perturbed_copy(model: Path, dest: Path, scale: float = 1e-2) -> Path:
    shutil.copytree(model, dest)
    path = dest / "model.safetensors"
    tensors = load_file(path)
    keys = vision_keys(tensors)
    assert keys, f"no vision weights found by role in {sorted(tensors)[:8]}..."
    gen = torch.Generator().manual_seed(0)
    for key in keys:
        t = tensors[key]
        tensors[key] = t + scale * t.abs().mean() * torch.randn(t.shape, generator=gen)
    save_file(tensors, path, metadata={"format": "pt"})
    return dest


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_a_vision_weights_fault_is_localized_to_the_encoder(name: str, tmp_path: Path) -> None:
    # In a child of its own, as a real run loads each model in a process of its own, forked from a fork server
    # that has imported the harness and computed nothing (a fork of this process, whose OpenMP threads have
    # run, can deadlock).
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["tests.test_zoo"])
    with context.Pool(1) as pool:
        problems = pool.apply(_localize, (name, tmp_path))
    assert not problems, problems


def _localize(name: str, tmp_path: Path) -> list:
    """What is wrong with the ladder of the perturbed model's run (nothing: an empty list)."""
    model = perturbed_copy(model_dir(name), tmp_path / "model")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(localize_run, "run_probe", inline_probe)
        run = execute(RunConfig(cases=[CASES], out=tmp_path / "out", model=str(model), reference_model=name,
                                engine="hf", only=IMAGE_CASES, variants=["base"]),
                      progress=lambda _: None, launcher=inline)
    if {c.case_id for c in run.cases} != IMAGE_CASES:
        return [f"cases: {[c.case_id for c in run.cases]}"]
    problems = []
    for case in run.cases:
        if case.verdict != "fail" or case.ladder is None:
            problems.append((case.case_id, case.verdict, case_lines(case)))
            continue
        rungs = {r.stage: r for r in case.ladder.rungs}
        if rungs["prompt"].status != "pass":
            problems.append((case.case_id, ladder_text(case.ladder)))
        elif rungs["encoder"].status == "unavailable":  # no projector to read the encoder's output from
            if not (rungs["encoder"].where and case.ladder.first == "features"):
                problems.append((case.case_id, ladder_text(case.ladder)))
        elif case.ladder.first != "encoder":
            problems.append((case.case_id, ladder_text(case.ladder)))
    return problems


def _row(model: str, verdict_: str, known: list[str] | None = None) -> ZooRow:
    return ZooRow(model, "TinyForConditionalGeneration", verdict_, {"pass": 3, "known": len(known or []), "fail": 0},
                  {"pass": 30}, 2.5, known or [], 12.0)


def test_the_zoo_table_and_page(tmp_path: Path) -> None:
    rows = [_row("tiny-a", "pass"), _row("tiny-b", "pass", ["vLLM CPU bug (repro/x.py)"])]
    page = write_zoo(tmp_path, rows, ["tiny-a", "tiny-b"])
    assert read_zoo(tmp_path) == (rows, ["tiny-a", "tiny-b"]) and verdict(rows) == "pass"
    assert table_rows(rows)[1] == ("tiny-b", "Tiny", "pass", "3/1/0", "2.5x", "12 s", "vLLM CPU bug (repro/x.py)")
    html = page.read_text()
    assert 'href="tiny-a/index.html"' in html and "repro/x.py" in html
    assert verdict([*rows, _row("tiny-c", "fail")]) == "fail" and verdict([*rows, _row("d", "error")]) == "error"
    assert read_zoo(tmp_path / "nothing-here") is None


def test_the_gate_takes_a_zoo_folder_as_one_decision(tmp_path: Path) -> None:
    """Every model's results are gated; the worst decides, each reason names its model."""
    source = tmp_path / "runs"
    run = execute(RunConfig(cases=[CASES], out=source, engine="hf", only={"text-only"}, variants=["base"]),
                  progress=lambda _: None, launcher=inline)
    assert run.verdict == "pass"
    zoo = tmp_path / "zoo"
    for name in ("tiny-a", "tiny-b"):
        shutil.copytree(source, zoo / name)
    write_zoo(zoo, [_row("tiny-a", "pass"), _row("tiny-b", "pass")], ["tiny-a", "tiny-b"])
    config = load_gate_config()
    assert gate_file(zoo, "default", config).code == 0
    write_zoo(zoo, [_row("tiny-a", "pass")], ["tiny-a", "tiny-b"])  # stopped before tiny-b: no decision
    assert gate_file(zoo, "default", config).code == 2
    write_zoo(zoo, [_row("tiny-a", "pass"), _row("tiny-b", "pass")], ["tiny-a", "tiny-b"])
    results = json.loads((zoo / "tiny-b" / "results.json").read_text())
    results["status"] = "partial"
    (zoo / "tiny-b" / "results.json").write_text(json.dumps(results))
    decision = gate_file(zoo, "default", config)
    assert decision.code == 2 and any(r.startswith("tiny-b: ") for r in decision.reasons), decision.reasons


def test_a_known_record_can_name_an_architecture_and_the_media_it_needs(tmp_path: Path) -> None:
    """An engine bug in one architecture's code covers every checkpoint of it, and only the cases that hold
    what the bug needs (Gemma 3's image mask: not its text-only cases)."""
    from harness.inputs.cases import Case
    from harness.run.known import load_known

    text = """known_failures:
  - {model: "*", architecture: Gemma3ForConditionalGeneration, engine: vllm, engine_version: "*", device: "*",
     cases: "*", media: [images], variants: "*", metrics: "*", reason: "r", reproduction: repro/x.py}
"""
    gemma, llava = tmp_path / "gemma", tmp_path / "llava"
    for path, arch in ((gemma, "Gemma3ForConditionalGeneration"), (llava, "LlavaForConditionalGeneration")):
        path.mkdir()
        (path / "config.json").write_text(json.dumps({"architectures": [arch]}))
    [record] = load_known("my-gemma", str(gemma), "vllm", "0.32.0", "cpu", text)
    assert not load_known("my-llava", str(llava), "vllm", "0.32.0", "cpu", text)
    def case(*images: Path) -> Case:
        return Case("a", CASES / "default.yaml", images, (), 8, (), {})

    assert record.applies_to(case(CASES / "images" / "chelsea.png"), "batched")
    assert not record.applies_to(case(), "batched")
    with pytest.raises(ValueError, match="media"):
        load_known("g", str(gemma), "vllm", "0", "cpu", text.replace("media: [images]", "media: [audio]"))


def test_a_reference_bug_on_record_makes_its_case_known_not_an_error(tmp_path: Path) -> None:
    """The reference cannot run a case for a bug someone has already found (transformers' Mistral 3 on a
    one-token image): the case is known, with the record, and any other reference error stays an error."""
    from harness.core.notes import note
    from harness.inputs.cases import Case
    from harness.run.known import known_reference_failure, load_known

    text = """known_failures:
  - {model: "*", engine: vllm, engine_version: "*", device: "*", cases: "*", media: [images], variants: "*",
     metrics: [], errors: [{type: RuntimeError, message: "split_with_sizes expects"}], reason: "r", reproduction: x}
"""
    known = load_known("m", str(tmp_path), "vllm", "0.32.0", "cpu", text)
    case = Case("tiny-png", CASES / "default.yaml", (CASES / "images" / "tiny.png",), (), 8, (), {})
    bug = note("reference_failed", type="RuntimeError", message="split_with_sizes expects split_sizes to sum ...")
    other = note("reference_failed", type="RuntimeError", message="out of memory")
    assert known_reference_failure(case, bug, known) is known[0]
    assert known_reference_failure(case, other, known) is None
    assert known_reference_failure(replace(case, images=()), bug, known) is None  # the record needs an image


def test_docs_list_every_built_in_model() -> None:
    """docs/models.md says what each built-in model exercises and how it fares: a new recipe needs its row."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "models.md").read_text()
    assert not [name for name in MODELS if f"`{name}`" not in text]


def test_a_decoder_layer_output_is_read_the_way_the_layer_returns_it() -> None:
    """vLLM layers return (output, residual): Llama-style layers keep the residual apart (the hidden state is
    their sum, the residual updated in place), Cohere-style layers add it in and hand their input back as the
    residual. Either way the capture must record the whole hidden state, once."""
    from harness.engines.capture import Recorder

    class Apart(torch.nn.Module):
        def forward(self, positions, hidden_states, residual):
            h = hidden_states.clone()  # the normed input
            if residual is None:
                residual = hidden_states
            else:
                residual.add_(hidden_states)  # in place, as vLLM's fused add-norm
            residual.add_(h)  # the attention output, added in place before the MLP's norm
            return h * 2, residual

    class Folded(torch.nn.Module):
        def forward(self, positions, hidden_states, residual):
            return hidden_states + hidden_states * 2, hidden_states

    class Stack(torch.nn.Module):
        def __init__(self, layer: type) -> None:
            super().__init__()
            self.layers = torch.nn.ModuleList([layer(), layer()])

        def forward(self, positions, hidden_states):
            residual = None
            for layer in self.layers:
                hidden_states, residual = layer(positions, hidden_states, residual)
            return hidden_states

    x = torch.ones(3, 4)
    # Apart: layer 0 gives 2 + (1 + 1) = 4, layer 1 (given 2, residual 2) 4 + (2 + 2 + 2) = 10.
    for layer, expected in ((Apart, (4.0, 10.0)), (Folded, (3.0, 9.0))):
        model = torch.nn.Module()
        model.model = Stack(layer)
        recorder = Recorder(model)
        model.model(torch.arange(3), x.clone())
        arrays = recorder.arrays()
        assert (arrays["layer.0"][0, 0], arrays["layer.1"][0, 0]) == expected, layer.__name__
