"""The committed trained tiny Qwen2-VL (`tiny-qwen2-vl-trained`): it answers in words, and the words follow the image.

Loads the committed files with HF float32 on the CPU (a few seconds); nothing
is retrained here. Retraining takes minutes and is checked by hand, as
harness/inputs/models/trained/tiny-qwen2-vl-trained/RECIPE.md describes:

    python -m harness.inputs.models.train_tiny /tmp/retrain
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from harness.inputs.models import MODELS, list_models, model_dir, model_fingerprint, train_tiny

# Measured on the committed weights (see RECIPE.md): held-out images 0..19 of
# `train_tiny.heldout`. The floors leave room for a library update that moves
# a borderline answer, not for a broken model.
COLOUR_FLOOR = 18  # of 20; measured 20
SHAPE_FLOOR = 16  # of 20; measured 19 (42 of all 50)


@pytest.fixture(scope="module")
def hf() -> tuple:
    from transformers import AutoProcessor, Qwen2VLForConditionalGeneration

    path = train_tiny.TRAINED.directory
    processor = AutoProcessor.from_pretrained(path)
    model = Qwen2VLForConditionalGeneration.from_pretrained(path, dtype=torch.float32).eval()
    return processor, model


def test_registered_as_trained_and_resolves_to_the_committed_files(tmp_path: Path, monkeypatch) -> None:
    recipe = MODELS["tiny-qwen2-vl-trained"]
    assert recipe.kind == "trained" and recipe.architecture == "Qwen2VLForConditionalGeneration"
    monkeypatch.setattr(train_tiny, "train", lambda *a, **k: pytest.fail("retrained at run time"))
    path = model_dir("tiny-qwen2-vl-trained", tmp_path)
    assert model_fingerprint(path) == model_fingerprint(train_tiny.TRAINED.directory)
    row = next(r for r in list_models(tmp_path, build=False) if r["name"] == "tiny-qwen2-vl-trained")
    assert row["kind"] == "trained" and row["path"] == str(path)


def test_committed_files_are_small_float32() -> None:
    from safetensors import safe_open

    weights = train_tiny.TRAINED.directory / "model.safetensors"
    assert weights.stat().st_size < 8_000_000
    with safe_open(str(weights), "pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"F32"}
    assert (train_tiny.TRAINED.directory / "RECIPE.md").is_file()


def test_names_colour_and_shape_on_held_out_images(hf: tuple) -> None:
    processor, model = hf
    colour = shape = 0
    for scene, question, _ in train_tiny.heldout(20):
        words = train_tiny.answer(model, processor, train_tiny.render(scene), question).rstrip(".").split()
        name, col, _ = scene.shapes[0]
        colour += col in words
        shape += name in words
    assert colour >= COLOUR_FLOOR and shape >= SHAPE_FLOOR, (colour, shape)


def test_changing_the_image_changes_the_answer(hf: tuple) -> None:
    processor, model = hf
    scenes = [train_tiny.Scene("shapes", (255, 255, 255), [("circle", colour, "middle")], jitter=3)
              for colour in ("red", "blue", "green")]
    answers = {train_tiny.answer(model, processor, train_tiny.render(s), "What colour is the shape?") for s in scenes}
    assert answers == {"The shape is red.", "The shape is blue.", "The shape is green."}
    # The same question about a word image and a shapes image gets a different kind of answer.
    word = train_tiny.Scene("word", (255, 255, 255), word="sun", jitter=4)
    described = {train_tiny.answer(model, processor, train_tiny.render(s), "Describe this image.")
                 for s in (scenes[0], word)}
    assert len(described) == 2


def test_case_images_are_deterministic(tmp_path: Path) -> None:
    committed = Path(__file__).resolve().parent.parent / "cases" / "images"
    for path in train_tiny.make_case_images(tmp_path):
        assert path.read_bytes() == (committed / path.name).read_bytes(), path.name


def test_suppressed_tokens_have_zero_output_rows() -> None:
    """Vision placeholders, padding ids and bytes that are not text on their own can never win greedy decode."""
    from safetensors import safe_open

    with safe_open(str(train_tiny.TRAINED.directory / "model.safetensors"), "pt") as f:
        head = f.get_tensor("lm_head.weight")
    from transformers import AutoTokenizer

    from harness.inputs.models.zoo.qwen2_vl import QWEN2_VL

    raw = AutoTokenizer.from_pretrained(train_tiny.TRAINED.directory).backend_tokenizer
    token_ids = {t: raw.token_to_id(t) for t in QWEN2_VL.tokens}
    never = train_tiny._never_emitted(token_ids, raw)
    assert len(never) > 8 and not head[never].any()
    assert not head[raw.get_vocab_size():].any()
