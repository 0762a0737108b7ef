"""Train the tiny Qwen2-VL on synthetic images so its greedy answers are words that depend on the image.

The random-weight models (`zoo.qwen2_vl`) are fine for parity numbers but say
nothing readable. This recipe keeps their architecture, tokenizer and
processor, and trains the weights for a few minutes on the CPU on generated
scenes: one to three coloured shapes (circle, square, triangle) at the left,
right, top, bottom or middle of a plain background, a short word rendered
with PIL's default font, or a blurry colour field, each with a question and a
one-sentence answer. The result is committed under
`harness/inputs/models/trained/tiny-qwen2-vl-trained/`; nothing here runs at harness
run time.

    python -m harness.inputs.models.train_tiny OUT_DIR

Everything is seeded (data per step from `SEED`, weights from `torch.manual_seed`),
the data order is fixed, and torch runs one thread (`THREADS`), so a retrain
on the same library versions reproduces the weights bit for bit (checked:
see the model's RECIPE.md, which also has the training and quality figures).

For the model registry this module declares `tiny-qwen2-vl-trained` (`TRAINED`,
a `recipe.Committed`: its hash is the committed files', building copies them;
neither trains). `make_case_images` writes the default case
images made for this model (cases/images/shapes_*.png, word_cat.png).
"""
from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image, ImageDraw, ImageFilter, ImageFont

from harness.inputs.models.recipe import Committed
from harness.inputs.models.tokenizer import not_text, padded_vocab
from harness.inputs.models.zoo.qwen2_vl import QWEN2_VL

if TYPE_CHECKING:
    import torch

SEED = 1234
HELDOUT_SEED = 987_654
THREADS = 1  # see RECIPE.md: on a shared 2-core machine two OpenMP threads stall each other
STEPS = 2400
BATCH = 16
VISION_LR_SCALE = 3.0  # the vision tower learns shapes slowly at the text model's rate
LR = 3e-3
WARMUP = 40
WEIGHT_DECAY = 0.01
TAIL = 24  # answer + <|im_end|> + <|endoftext|>... : the tokens the loss sees after the prompt
IMAGE_SIZE = 112
TEXT_LAYERS = 2

TRAINED = Committed(
    "tiny-qwen2-vl-trained", QWEN2_VL.model,
    "Qwen2-VL as tiny-qwen2-vl, trained on synthetic shapes/words so greedy answers are readable "
    "and depend on the image; committed weights (harness/inputs/models/trained/), copied, never retrained",
    Path(__file__).resolve().parent / "trained" / "tiny-qwen2-vl-trained",
)

COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 160, 40),
    "blue": (30, 60, 220),
    "yellow": (240, 210, 20),
    "purple": (140, 40, 180),
    "orange": (250, 130, 20),
}
BACKGROUNDS = ((255, 255, 255), (228, 228, 228), (246, 240, 222))
SHAPES = ("circle", "square", "triangle")
# Position name -> centre as a fraction of the side, and how an answer says it.
POSITIONS = {
    "left": ((0.27, 0.5), "on the left"),
    "right": ((0.73, 0.5), "on the right"),
    "top": ((0.5, 0.27), "at the top"),
    "bottom": ((0.5, 0.73), "at the bottom"),
    "middle": ((0.5, 0.5), "in the middle"),
}
ORDER = ("left", "top", "middle", "bottom", "right")  # the order a description lists shapes in
PAIRS = (("left", "right"), ("top", "bottom"))
TRIPLES = (("left", "middle", "right"), ("top", "middle", "bottom"))
NUMBER = {1: "one", 2: "two", 3: "three"}
WORDS = ("cat", "dog", "sun", "box", "tree", "fish")
# Named colours for "what colour is this image mostly": the shape colours plus neutrals.
FIELD_COLOURS = {**COLOURS, "white": (240, 240, 240), "grey": (128, 128, 128), "black": (20, 20, 20),
                 "brown": (120, 75, 40), "pink": (240, 150, 190)}
GENERIC_QUESTIONS = (
    "Describe this image.", "What do you see?", "What is in the picture?", "Describe the scene in one sentence.",
    "What colours do you see in this image?", "What is in this small picture?", "What animal is in this picture?",
    "What is the main object?", "Describe this photo in detail.", "Read the text written in this image.",
)


@dataclass
class Scene:
    """What an image shows: shapes (shape, colour, position), or a word, or a colour field."""

    kind: str  # "shapes", "word", "field" or "none" (no image)
    background: tuple[int, int, int] = (255, 255, 255)
    shapes: list[tuple[str, str, str]] = field(default_factory=list)
    word: str = ""
    colour: str = ""
    jitter: int = 0  # seed for the pixel-level variation (offsets, sizes, tints)


def _tint(rgb: tuple[int, int, int], rng: random.Random, amount: int = 18) -> tuple[int, int, int]:
    return tuple(max(0, min(255, c + rng.randint(-amount, amount))) for c in rgb)


def render(scene: Scene, size: tuple[int, int] = (IMAGE_SIZE, IMAGE_SIZE)) -> Image.Image | None:
    """The scene as an RGB image (None for "none"); deterministic given `scene.jitter`."""
    if scene.kind == "none":
        return None
    rng = random.Random(scene.jitter)
    w, h = size
    image = Image.new("RGB", size, _tint(scene.background, rng, 8))
    draw = ImageDraw.Draw(image)
    if scene.kind == "shapes":
        side = min(w, h)
        lo, hi = {1: (0.17, 0.23), 2: (0.13, 0.17)}.get(len(scene.shapes), (0.09, 0.12))  # fewer shapes: bigger
        for shape, colour, position in scene.shapes:
            (fx, fy), _ = POSITIONS[position]
            cx = fx * w + rng.randint(-4, 4)
            cy = fy * h + rng.randint(-4, 4)
            r = side * rng.uniform(lo, hi)
            fill = _tint(COLOURS[colour], rng)
            if shape == "circle":
                draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
            elif shape == "square":
                s = r * 0.9
                draw.rectangle((cx - s, cy - s, cx + s, cy + s), fill=fill)
            else:
                draw.polygon([(cx, cy - r * 1.1), (cx - r * 1.1, cy + r * 0.9), (cx + r * 1.1, cy + r * 0.9)], fill=fill)
    elif scene.kind == "word":
        font = ImageFont.load_default(size=rng.randint(34, 42))
        left, top, right, bottom = draw.textbbox((0, 0), scene.word, font=font)
        x = (w - (right - left)) / 2 - left + rng.randint(-6, 6)
        y = (h - (bottom - top)) / 2 - top + rng.randint(-6, 6)
        draw.text((x, y), scene.word, font=font, fill=_tint(COLOURS[scene.colour], rng, 10) if scene.colour else (0, 0, 0))
    elif scene.kind == "field":
        base = FIELD_COLOURS[scene.colour]
        image.paste(_tint(base, rng, 20), (0, 0, w, h))
        for _ in range(rng.randint(2, 5)):  # blobs of nearby tones, then blur: a "photo" without objects
            x0, y0 = rng.randint(-20, w), rng.randint(-20, h)
            x1, y1 = x0 + rng.randint(15, 50), y0 + rng.randint(15, 50)
            draw.ellipse((x0, y0, x1, y1), fill=_tint(base, rng, 45))
        image = image.filter(ImageFilter.GaussianBlur(3))
    return image


def _a(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _describe(scene: Scene) -> str:
    parts = [f"{_a(colour)} {colour} {shape} {POSITIONS[pos][1]}"
             for shape, colour, pos in sorted(scene.shapes, key=lambda s: ORDER.index(s[2]))]
    text = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    return text[0].upper() + text[1:] + "."


def qa(scene: Scene, rng: random.Random) -> tuple[str, str]:
    """One (question, answer) pair about the scene."""
    if scene.kind == "none":
        return rng.choice(GENERIC_QUESTIONS + ("Write a short sentence about a quiet morning by the sea.",)), \
            "There is no image."
    if scene.kind == "field":
        return rng.choice(GENERIC_QUESTIONS), f"The image is mostly {scene.colour}."
    if scene.kind == "word":
        question = rng.choice(("What word is written?", "Read the text written in this image.",
                               "What does the text say?", "Describe this image."))
        if question == "Describe this image.":
            return question, f"The word {scene.word} in {scene.colour or 'black'}."
        return question, f"The word is {scene.word}."
    shapes = scene.shapes
    n = len(shapes)
    kinds = ["describe", "count", "where", "colour"] + (["shape"] * 3 if n == 1 else ["colour_of", "where"])
    kind = rng.choice(kinds)
    if kind == "describe":
        return rng.choice(("Describe this image.", "What is in the image?")), _describe(scene)
    if kind == "count":
        return "How many shapes are there?", ("There is one shape." if n == 1 else f"There are {NUMBER[n]} shapes.")
    if kind == "shape":
        shape, colour, _ = shapes[0]
        return "What shape is in the image?", f"{_a(colour).capitalize()} {colour} {shape}."
    if kind == "colour" and n == 1:
        return "What colour is the shape?", f"The shape is {shapes[0][1]}."
    shape, colour, pos = rng.choice(shapes)
    if kind == "where":
        return f"Where is the {shape}?", f"The {shape} is {POSITIONS[pos][1]}."
    return f"What colour is the {shape}?", f"The {shape} is {colour}."


def random_scene(rng: random.Random) -> Scene:
    """A scene from the training distribution: mostly shapes, some words, colour fields and no image."""
    u = rng.random()
    jitter = rng.getrandbits(32)
    background = rng.choice(BACKGROUNDS)
    if u < 0.75:
        n = rng.choice((1, 1, 1, 2, 2, 3))
        positions = [rng.choice(tuple(POSITIONS))] if n == 1 else list(rng.choice(PAIRS if n == 2 else TRIPLES))
        shapes = rng.sample(SHAPES, n)
        colours = rng.sample(tuple(COLOURS), n)
        return Scene("shapes", background, list(zip(shapes, colours, positions)), jitter=jitter)
    if u < 0.85:
        colour = rng.choice(("",) * 3 + tuple(COLOURS))
        return Scene("word", background, word=rng.choice(WORDS), colour=colour, jitter=jitter)
    if u < 0.96:
        return Scene("field", colour=rng.choice(tuple(FIELD_COLOURS)), jitter=jitter)
    return Scene("none", jitter=jitter)


def sample(seed: int) -> tuple[Scene, str, str]:
    """The example with this seed: scene, question, answer."""
    rng = random.Random(seed)
    scene = random_scene(rng)
    question, answer = qa(scene, rng)
    return scene, question, answer


def heldout(n: int = 50) -> list[tuple[Scene, str, str]]:
    """Held-out single-shape scenes (seeds disjoint from training), asked for colour and shape together."""
    rng = random.Random(HELDOUT_SEED)
    out = []
    for _ in range(n):
        shape, colour, pos = rng.choice(SHAPES), rng.choice(tuple(COLOURS)), rng.choice(tuple(POSITIONS))
        scene = Scene("shapes", rng.choice(BACKGROUNDS), [(shape, colour, pos)], jitter=rng.getrandbits(32))
        out.append((scene, "What shape is in the image?", f"{_a(colour).capitalize()} {colour} {shape}."))
    return out


# The default case images this model was made for (cases/images/), with the prompt and expected answer.
CASE_IMAGES = {
    "shapes_red_circle.png": (Scene("shapes", (255, 255, 255), [("circle", "red", "middle")], jitter=11),
                              "What colour is the shape?", "The shape is red."),
    "shapes_two.png": (Scene("shapes", (255, 255, 255), [("square", "green", "left"), ("triangle", "blue", "right")],
                             jitter=12), "How many shapes are there?", "There are two shapes."),
    "shapes_blue_square_left.png": (Scene("shapes", (246, 240, 222), [("square", "blue", "left")], jitter=13),
                                    "Where is the square?", "The square is on the left."),
    "word_cat.png": (Scene("word", (255, 255, 255), word="cat", jitter=14), "What word is written?", "The word is cat."),
}


def make_case_images(out_dir: Path) -> list[Path]:
    """Write the default case images (PNG, deterministic) into `out_dir`; cases/make_images.py may call this."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, (scene, _, _) in CASE_IMAGES.items():
        path = out_dir / name
        render(scene).save(path, optimize=True)
        paths.append(path)
    return paths


def _build_processor() -> tuple[Any, dict[str, int], Any]:
    """The processor and tokenizer of `tiny-qwen2-vl`, built the same way."""
    return QWEN2_VL.build_processor()


def prompt_text(processor: Any, question: str, with_image: bool = True) -> str:
    content = ([{"type": "image"}] if with_image else []) + [{"type": "text", "text": question}]
    return processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True,
                                         tokenize=False)


def _batch(processor: Any, token_ids: dict[str, int], seeds: list[int]) -> dict[str, torch.Tensor]:
    """Model inputs and labels for the examples with these seeds (right-padded, loss on the answer tail only)."""
    import torch
    tokenizer = processor.tokenizer
    im_end, pad = token_ids["<|im_end|>"], token_ids["<|endoftext|>"]
    rows, labels, images = [], [], []
    for seed in seeds:
        scene, question, answer = sample(seed)
        image = render(scene)
        text = prompt_text(processor, question, image is not None)
        if image is None:
            ids = tokenizer(text)["input_ids"]
        else:
            enc = processor(text=[text], images=[image], return_tensors="pt")
            ids = enc["input_ids"][0].tolist()
            images.append(image)
        tail = tokenizer(answer)["input_ids"] + [im_end]
        tail += [pad] * max(2, TAIL - len(tail))  # long descriptions are kept whole
        rows.append(ids + tail)
        labels.append([-100] * len(ids) + tail)
    length = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), length), pad, dtype=torch.long)
    label_ids = torch.full((len(rows), length), -100, dtype=torch.long)
    mask = torch.zeros((len(rows), length), dtype=torch.long)
    for i, (row, lab) in enumerate(zip(rows, labels)):
        input_ids[i, :len(row)] = torch.tensor(row)
        label_ids[i, :len(lab)] = torch.tensor(lab)
        mask[i, :len(row)] = 1
    batch = {"input_ids": input_ids, "attention_mask": mask, "labels": label_ids,
             "mm_token_type_ids": (input_ids == token_ids["<|image_pad|>"]).long()}
    if images:
        pix = processor.image_processor(images=images, return_tensors="pt")
        batch["pixel_values"] = pix["pixel_values"]
        batch["image_grid_thw"] = pix["image_grid_thw"]
    return batch


def _never_emitted(token_ids: dict[str, int], raw: Any) -> list[int]:
    special = list(QWEN2_VL.tokens)
    return [token_ids[t] for t in special if t not in QWEN2_VL.emitted] + not_text(raw, special)


def _config(tokenizer_size: int, token_ids: dict[str, int]) -> Any:
    from harness.inputs.models.recipe import construct

    config = construct(QWEN2_VL.config, token_ids, padded_vocab(tokenizer_size))
    config.text_config.num_hidden_layers = TEXT_LAYERS
    return config


def train(out_dir: Path, steps: int = STEPS, log: Any = sys.stderr) -> None:
    """Build the tokenizer/processor/config like `tiny-qwen2-vl`, train, and `save_pretrained` into `out_dir`.

    The loss sees only the answer tail (see `_batch`). Output rows that must
    never win greedy decoding (padding ids, vision tokens, bytes that are not
    text on their own: see `tokenizer.not_text`) stay zero throughout, so
    their logit is always 0, and since they take part in the softmax the model
    learns to put real answers far above it. The training figures (steps,
    final loss, wall time) go to `out_dir/training.json`.
    """
    import torch
    from transformers import GenerationConfig, Qwen2VLForConditionalGeneration

    torch.set_num_threads(THREADS)
    started = time.perf_counter()
    processor, token_ids, raw = _build_processor()
    tokenizer_size = len(processor.tokenizer)
    config = _config(tokenizer_size, token_ids)
    never = _never_emitted(token_ids, raw)
    torch.manual_seed(SEED)
    model = Qwen2VLForConditionalGeneration(config).to(torch.float32)
    frozen_rows = torch.zeros(config.text_config.vocab_size, dtype=torch.bool)
    frozen_rows[tokenizer_size:] = True
    frozen_rows[never] = True
    with torch.no_grad():
        model.lm_head.weight[frozen_rows] = 0.0
        model.get_input_embeddings().weight[tokenizer_size:] = 0.0
    model.train()

    groups: dict[tuple[bool, bool], list[torch.nn.Parameter]] = {}
    for name, param in model.named_parameters():  # (vision tower?, decayed?) -> parameters, in model order
        groups.setdefault((name.startswith("model.visual."), param.dim() > 1 and "embed" not in name), []).append(param)
    optimizer = torch.optim.AdamW(
        [{"params": params, "weight_decay": WEIGHT_DECAY if decayed else 0.0,
          "lr_scale": VISION_LR_SCALE if visual else 1.0} for (visual, decayed), params in groups.items()],
        lr=LR, betas=(0.9, 0.98))

    def lr_at(step: int) -> float:
        if step < WARMUP:
            return LR * (step + 1) / WARMUP
        progress = (step - WARMUP) / max(1, steps - WARMUP)
        return LR * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))

    losses = []
    for step in range(steps):
        batch = _batch(processor, token_ids, [SEED * 1_000_003 + step * BATCH + i for i in range(BATCH)])
        labels = batch.pop("labels")
        logits = model(**batch).logits
        loss = torch.nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=-100)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        model.lm_head.weight.grad[frozen_rows] = 0.0
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step) * group["lr_scale"]
        optimizer.step()
        with torch.no_grad():
            model.lm_head.weight[frozen_rows] = 0.0
        losses.append(loss.item())
        if log and (step % 50 == 0 or step == steps - 1):
            print(f"step {step:4d} loss {loss.item():.4f} lr {lr_at(step):.2e} "
                  f"{time.perf_counter() - started:.0f}s", file=log, flush=True)

    model.eval()
    model.generation_config = GenerationConfig(
        bos_token_id=token_ids["<|endoftext|>"],
        eos_token_id=[token_ids["<|im_end|>"], token_ids["<|endoftext|>"]],
        pad_token_id=token_ids["<|endoftext|>"],
        do_sample=False,
    )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    figures = {
        "steps": steps, "batch": BATCH, "seed": SEED, "threads": THREADS, "lr": LR,
        "vision_lr_scale": VISION_LR_SCALE,
        "final_loss": losses[-1], "final_loss_mean_last_20": sum(losses[-20:]) / len(losses[-20:]),
        "wall_s": round(time.perf_counter() - started, 1),
    }
    (out_dir / "training.json").write_text(json.dumps(figures, indent=2) + "\n")


def answer(model: Any, processor: Any, image: Image.Image | None, question: str, max_new_tokens: int = 16) -> str:
    """The greedy answer (special tokens dropped) from a loaded HF model."""
    import torch
    text = prompt_text(processor, question, image is not None)
    inputs = processor(text=[text], images=[image] if image is not None else None, return_tensors="pt")
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    return processor.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--steps", type=int, default=STEPS)
    args = parser.parse_args(argv)
    train(args.out_dir, steps=args.steps)
    print((args.out_dir / "training.json").read_text(), end="")


if __name__ == "__main__":
    main()
