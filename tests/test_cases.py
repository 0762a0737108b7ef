"""Case loading: the shipped suite is valid, and every bad input becomes a named problem."""
from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from harness.inputs.cases import Case, CaseProblem, load_cases

CASES_DIR = Path(__file__).resolve().parent.parent / "cases"

GOOD = """
  - id: good
    images: [img.png]
    prompt: "Describe this image."
"""


def image(path: Path) -> Path:
    """A small real image: the loader decodes every case image."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), "red").save(path, format="PNG" if path.suffix == ".png" else "JPEG")
    return path


def write(folder: Path, body: str, name: str = "cases.yaml") -> Path:
    """A case file with one valid case ('good') followed by `body`; creates img.png next to it."""
    image(folder / "img.png")
    path = folder / name
    path.write_text("cases:" + GOOD + body, encoding="utf-8")
    return path


def only_problem(path: Path) -> CaseProblem:
    """Load `path`, check the valid case survived, and return its single problem."""
    loaded = load_cases([path])
    assert [c.id for c in loaded.cases] == ["good"]
    assert len(loaded.problems) == 1, [str(p) for p in loaded.problems]
    return loaded.problems[0]


def test_default_cases_load_cleanly() -> None:
    loaded = load_cases([CASES_DIR])
    assert [str(p) for p in loaded.problems] == []
    assert len(loaded.cases) >= 12
    for case in loaded.cases:
        assert all(p.is_absolute() and p.is_file() for p in case.images)
        n_parts = sum(part["type"] == "image" for m in case.messages for part in m["content"])
        assert n_parts == len(case.images), case.id
    tags = {t for c in loaded.cases for t in c.tags}
    assert {"jpeg-420", "jpeg-444", "png", "text-only", "multi-image", "chat", "long-prompt"} <= tags
    awkward = {"jpeg-422", "progressive", "gray", "cmyk", "exif", "alpha", "png16", "large"}
    assert awkward <= {t for c in loaded.cases if "awkward" in c.tags for t in c.tags}


def test_plain_prompt_becomes_one_user_message_images_first(tmp_path: Path) -> None:
    image(tmp_path / "sub" / "pics" / "b.jpg")
    path = write(tmp_path / "sub", """
  - id: two
    images: [img.png, pics/../pics/b.jpg]
    prompt: "Compare them."
    max_new_tokens: 24
    tags: [png, multi-image]
    thresholds: {prefill_max: 1.0e-3}
""")
    loaded = load_cases([path])
    assert loaded.problems == []
    good, two = loaded.cases
    assert good == Case(
        id="good", source=path, images=(tmp_path / "sub" / "img.png",),
        messages=({"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe this image."}]},),
        max_new_tokens=16, tags=(), thresholds={},
    )
    assert two.images == (tmp_path / "sub" / "img.png", tmp_path / "sub" / "pics" / "b.jpg")
    text = {"type": "text", "text": "Compare them."}
    assert two.messages[0]["content"] == [{"type": "image"}, {"type": "image"}, text]
    assert (two.max_new_tokens, two.tags, two.thresholds) == (24, ("png", "multi-image"), {"prefill_max": 1e-3})


def test_chat_prompt_string_content_is_normalized(tmp_path: Path) -> None:
    path = write(tmp_path, """
  - id: chat
    images: [img.png]
    prompt:
      - {role: system, content: "Be brief."}
      - role: user
        content: [{type: image}, {type: text, text: "What is this?"}]
      - {role: assistant, content: "A cat."}
      - {role: user, content: "What colour?"}
""")
    loaded = load_cases([path])
    assert loaded.problems == []
    assert loaded.cases[1].messages == (
        {"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is this?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "A cat."}]},
        {"role": "user", "content": [{"type": "text", "text": "What colour?"}]},
    )


def test_text_only_case_and_absolute_image_path_inside_the_folder(tmp_path: Path) -> None:
    path = write(tmp_path, f"""
  - id: text-only
    prompt: "Hello there."
  - id: absolute
    images: ["{tmp_path / 'img.png'}"]
    prompt: "Describe this image."
""")
    loaded = load_cases([path])
    assert loaded.problems == []
    assert loaded.cases[1].images == ()
    assert loaded.cases[1].messages[0]["content"] == [{"type": "text", "text": "Hello there."}]
    assert loaded.cases[2].images == (tmp_path / "img.png",)


@pytest.mark.parametrize(
    ("body", "case_id", "field", "message"),
    [
        ("  - {images: [img.png], prompt: hi}\n", None, "cases[1].id", "required"),
        ("  - {id: 7, prompt: hi}\n", None, "cases[1].id", "must be a string"),
        ("  - {id: 'bad id', prompt: hi}\n", "bad id", "cases[1].id", "must match"),
        ("  - {id: good, prompt: hi}\n", "good", "id", "duplicate id"),
        ("  - {id: c, images: img.png, prompt: hi}\n", "c", "images", "must be a list"),
        ("  - {id: c, images: [img.png, 3], prompt: hi}\n", "c", "images[1]", "non-empty string"),
        ("  - {id: c, images: [img.png, images/x.jpg], prompt: hi}\n", "c", "images[1]",
         "file not found: "),
        ("  - {id: c, images: [../img.png], prompt: hi}\n", "c", "images[0]",
         "'../img.png' resolves to "),
        ("  - {id: c, images: [img.png]}\n", "c", "prompt", "required"),
        ("  - {id: c, prompt: '  '}\n", "c", "prompt", "must not be empty"),
        ("  - {id: c, prompt: []}\n", "c", "prompt", "non-empty"),
        ("  - {id: c, prompt: [{role: robot, content: hi}]}\n", "c", "prompt[0].role", "must be one of"),
        ("  - {id: c, prompt: [hello]}\n", "c", "prompt[0]", "must be a mapping"),
        ("  - {id: c, prompt: [{role: user}]}\n", "c", "prompt[0].content", "non-empty string or"),
        ("  - {id: c, prompt: [{role: user, content: hi, name: x}]}\n", "c", "prompt[0].name", "unknown key"),
        ("  - {id: c, prompt: [{role: user, content: [{type: audio}]}]}\n", "c", "prompt[0].content[0].type",
         "'image', 'video' or 'text'"),
        ("  - {id: c, prompt: [{role: user, content: [{type: video}]}]}\n", "c", "prompt",
         "has 1 video parts but the case has 0 videos"),
        ("  - {id: c, videos: clip, prompt: hi}\n", "c", "videos", "must be a list"),
        ("  - {id: c, videos: [nowhere], prompt: hi}\n", "c", "videos[0]", "not a folder inside"),
        ("  - {id: c, prompt: [{role: user, content: [{type: text}]}]}\n", "c", "prompt[0].content[0].text",
         "non-empty string"),
        ("  - {id: c, images: [img.png], prompt: [{role: user, content: [{type: image, url: a.png}]}]}\n", "c",
         "prompt[0].content[0].url", "unknown key"),
        ("  - {id: c, images: [img.png, img.png], prompt: [{role: user, content: [{type: image}]}]}\n", "c",
         "prompt", "has 1 image parts but the case has 2 images"),
        ("  - {id: c, prompt: hi, max_new_tokens: 0}\n", "c", "max_new_tokens", "from 1 to 4096"),
        ("  - {id: c, prompt: hi, max_new_tokens: 5000}\n", "c", "max_new_tokens", "from 1 to 4096"),
        ("  - {id: c, prompt: hi, max_new_tokens: '16'}\n", "c", "max_new_tokens", "from 1 to 4096"),
        ("  - {id: c, prompt: hi, max_new_tokens: true}\n", "c", "max_new_tokens", "from 1 to 4096"),
        ("  - {id: c, prompt: hi, max_new_token: 16}\n", "c", "max_new_token", "unknown key"),
        ("  - {id: c, prompt: hi, tags: jpeg}\n", "c", "tags", "list of non-empty strings"),
        ("  - {id: c, prompt: hi, thresholds: [1]}\n", "c", "thresholds", "mapping"),
        ("  - {id: c, prompt: hi, thresholds: {prefill_max: lots}}\n", "c", "thresholds.prefill_max",
         "must be a number"),
        ("  - {id: c, prompt: hi, thresholds: {prefill_max: .nan}}\n", "c", "thresholds.prefill_max",
         "must be a number"),
        ("  - just a string\n", None, "cases[1]", "must be a mapping"),
    ],
)
def test_each_rule_names_file_case_and_field(
    tmp_path: Path, body: str, case_id: str | None, field: str, message: str
) -> None:
    path = write(tmp_path, body)
    problem = only_problem(path)
    assert (problem.file, problem.case_id, problem.field) == (path, case_id, field)
    assert message in problem.message
    assert str(problem).startswith(f"{path}: ")
    assert f"field '{field}'" in str(problem)


def test_problem_str_format() -> None:
    problem = CaseProblem(Path("cases/foo.yaml"), "bar", "images[0]", "file not found: images/x.jpg")
    assert str(problem) == "cases/foo.yaml: case 'bar': field 'images[0]': file not found: images/x.jpg"
    assert str(CaseProblem(Path("a.yaml"), None, None, "cannot read YAML")) == "a.yaml: cannot read YAML"


def test_all_problems_of_a_case_are_reported(tmp_path: Path) -> None:
    path = write(tmp_path, "  - {id: c, images: [nope.png], max_new_tokens: 0, colour: red}\n")
    loaded = load_cases([path])
    assert [c.id for c in loaded.cases] == ["good"]
    assert sorted(p.field for p in loaded.problems) == ["colour", "images[0]", "max_new_tokens", "prompt"]


def test_duplicate_id_across_files_is_a_problem_on_the_later_file(tmp_path: Path) -> None:
    first = write(tmp_path, "", name="a.yaml")
    second = tmp_path / "b.yaml"
    second.write_text("cases:\n  - {id: good, prompt: hi}\n  - {id: other, prompt: hi}\n", encoding="utf-8")
    loaded = load_cases([tmp_path])
    assert [(c.id, c.source) for c in loaded.cases] == [("good", first), ("other", second)]
    [problem] = loaded.problems
    assert (problem.file, problem.case_id, problem.field) == (second, "good", "id")
    assert str(first) in problem.message


def test_same_file_named_twice_is_loaded_once(tmp_path: Path) -> None:
    path = write(tmp_path, "")
    loaded = load_cases([path, tmp_path])
    assert [c.id for c in loaded.cases] == ["good"] and loaded.problems == []


@pytest.mark.parametrize(
    "text",
    ["cases: [unclosed\n", "", "- id: x\n", "cases: 3\n", "\xff\xfe not utf-8"],
)
def test_unreadable_file_is_one_problem_without_case(tmp_path: Path, text: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_bytes(text.encode("latin-1"))
    loaded = load_cases([path])
    assert loaded.cases == []
    [problem] = loaded.problems
    assert (problem.file, problem.case_id) == (path, None)


def test_unknown_top_level_key_keeps_cases(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    image(tmp_path / "img.png")
    path.write_text("case_defaults: {}\ncases:" + GOOD, encoding="utf-8")
    problem = only_problem(path)
    assert (problem.case_id, problem.field, problem.message) == (None, "case_defaults", "unknown top-level key")


def test_missing_path_and_empty_directory(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    loaded = load_cases([tmp_path / "missing.yaml", tmp_path / "empty"])
    assert loaded.cases == []
    expected = [(tmp_path / "missing.yaml", None), (tmp_path / "empty", None)]
    assert [(p.file, p.case_id) for p in loaded.problems] == expected


def test_directory_loads_yaml_and_yml_sorted(tmp_path: Path) -> None:
    (tmp_path / "b.yml").write_text("cases:\n  - {id: b, prompt: hi}\n", encoding="utf-8")
    (tmp_path / "a.yaml").write_text("cases:\n  - {id: a, prompt: hi}\n", encoding="utf-8")
    (tmp_path / "notes.txt").write_text("cases: [not, loaded]\n", encoding="utf-8")
    assert [c.id for c in load_cases([tmp_path]).cases] == ["a", "b"]


def frames(folder: Path, sizes: list[tuple[int, int]]) -> None:
    folder.mkdir()
    for i, size in enumerate(sizes):
        Image.new("RGB", size, (10 * i, 80, 160)).save(folder / f"{i:03d}.png")


def test_a_video_is_its_folder_of_frames_in_name_order(tmp_path: Path) -> None:
    frames(tmp_path / "clip", [(56, 56)] * 3)
    path = write(tmp_path, "  - {id: v, videos: [clip], images: [img.png], prompt: hi}\n")
    video = load_cases([path]).cases[1]
    assert video.videos == (tuple(tmp_path / "clip" / f"{i:03d}.png" for i in range(3)),)
    assert [p["type"] for p in video.messages[0]["content"]] == ["image", "video", "text"]


@pytest.mark.parametrize(("sizes", "message"), [([(56, 56)], "at least 2 frames"),
                                                ([(56, 56), (28, 56)], "frames of different sizes")])
def test_a_bad_video_names_its_folder(tmp_path: Path, sizes: list[tuple[int, int]], message: str) -> None:
    frames(tmp_path / "clip", sizes)
    problem = only_problem(write(tmp_path, "  - {id: v, videos: [clip], prompt: hi}\n"))
    assert (problem.case_id, problem.field) == ("v", "videos[0]") and message in problem.message
