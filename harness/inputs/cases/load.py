"""Load and validate case files.

Bad input never raises: every mistake becomes a `CaseProblem` naming the file,
the case and the field, and only that case is dropped, so the runner can report
it as an error result while every other case still runs. Images are checked here,
once (`harness.inputs.cases.images`: inside the case file's folder, and decodable), so
no engine ever sees a bad one.
"""
from __future__ import annotations

import math
import re
import reprlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import yaml
from PIL import Image

from harness.config import CASE_THRESHOLD_KEYS, key_problem
from harness.inputs.cases.images import image_problem, resolve_image

DEFAULT_MAX_NEW_TOKENS = 16
MAX_NEW_TOKENS_LIMIT = 4096
ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
ROLES = ("system", "user", "assistant")
CASE_KEYS = ("id", "images", "videos", "prompt", "max_new_tokens", "tags", "thresholds")
# A value quoted in a message stays short: YAML aliases can nest a few lines into millions of items.
_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxdict, _REPR.maxstring = 2, 4, 4, 80
_show = _REPR.repr


@dataclass(frozen=True)
class Case:
    """One validated case; `messages` is what every engine renders with its chat template. A video is its
    frames, in order (a folder of image files in the case file's folder)."""

    id: str
    source: Path
    images: tuple[Path, ...]
    messages: tuple[dict, ...]
    max_new_tokens: int
    tags: tuple[str, ...]
    thresholds: dict
    videos: tuple[tuple[Path, ...], ...] = ()


@dataclass(frozen=True)
class CaseProblem:
    """Why a file or case was not loaded; `case_id` is None when no case can be named."""

    file: Path
    case_id: str | None
    field: str | None
    message: str

    def __str__(self) -> str:
        parts = [str(self.file)]
        if self.case_id is not None:
            parts.append(f"case {self.case_id!r}")
        if self.field is not None:
            parts.append(f"field {self.field!r}")
        return ": ".join([*parts, self.message])


@dataclass
class LoadedCases:
    cases: list[Case]
    problems: list[CaseProblem]


Errors = list[tuple[str, str]]  # (field, message) for one case


def load_cases(paths: Sequence[Path]) -> LoadedCases:
    """Load every case from YAML files and directories (their *.yaml/*.yml, sorted)."""
    loaded = LoadedCases([], [])
    seen: dict[str, Path] = {}
    checked: dict[Path, str | None] = {}  # image path -> its problem; an image shared by cases is decoded once
    for file in _case_files(paths, loaded.problems):
        _load_file(file, seen, checked, loaded)
    return loaded


def _case_files(paths: Sequence[Path], problems: list[CaseProblem]) -> list[Path]:
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            try:
                found = sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
            except OSError as e:
                problems.append(CaseProblem(path, None, None, f"cannot list directory: {e}"))
                continue
            if not found:
                problems.append(CaseProblem(path, None, None, "no *.yaml or *.yml files in directory"))
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            problems.append(CaseProblem(path, None, None, "no such file or directory"))
    # The same file named twice (directly and via its folder) must not look like duplicate ids.
    unique: dict[Path, Path] = {}
    for f in files:
        unique.setdefault(f.resolve(), f)
    return list(unique.values())


def _load_file(file: Path, seen: dict[str, Path], checked: dict[Path, str | None], loaded: LoadedCases) -> None:
    try:
        doc = yaml.safe_load(file.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        loaded.problems.append(CaseProblem(file, None, None, _yaml_error(e)))
        return
    except (OSError, UnicodeDecodeError) as e:
        loaded.problems.append(CaseProblem(file, None, None, f"cannot read YAML: {e}"))
        return
    if not isinstance(doc, dict) or not isinstance(doc.get("cases"), list):
        loaded.problems.append(CaseProblem(file, None, "cases", "file must be a mapping with a 'cases' list"))
        return
    for key in doc:
        if key != "cases":
            loaded.problems.append(CaseProblem(file, None, str(key), "unknown top-level key"))
    folder = file.resolve().parent  # the only folder its images may come from
    for index, raw in enumerate(doc["cases"]):
        if not isinstance(raw, dict):
            loaded.problems.append(CaseProblem(file, None, f"cases[{index}]", "case must be a mapping"))
            continue
        case_id, errors = _check_id(raw.get("id"), file, seen)
        case = _parse_case(raw, case_id, file, folder, checked, errors)
        # Without a usable id, point at the entry's position so the user can find it.
        prefix = "" if case_id is not None and ID_PATTERN.fullmatch(case_id) else f"cases[{index}]."
        loaded.problems.extend(CaseProblem(file, case_id, prefix + f, m) for f, m in errors)
        if not errors:
            loaded.cases.append(case)


def _yaml_error(exc: yaml.YAMLError) -> str:
    """One line with where it is, instead of PyYAML's multi-line excerpt of an anonymous string."""
    mark = getattr(exc, "problem_mark", None)
    if mark is None:
        return f"invalid YAML: {exc}"
    context = f" ({exc.context})" if getattr(exc, "context", None) else ""
    return f"invalid YAML at line {mark.line + 1}, column {mark.column + 1}: {exc.problem}{context}"


def _check_id(value: Any, file: Path, seen: dict[str, Path]) -> tuple[str | None, Errors]:
    if value is None:
        return None, [("id", "required")]
    if not isinstance(value, str):
        return None, [("id", f"must be a string, got {type(value).__name__}")]
    if not ID_PATTERN.fullmatch(value):
        return value, [("id", f"must match {ID_PATTERN.pattern}")]
    if value in seen:
        return value, [("id", f"duplicate id, first defined in {seen[value]}")]
    seen[value] = file
    return value, []


def _parse_case(raw: dict, case_id: str | None, file: Path, folder: Path, checked: dict[Path, str | None],
                errors: Errors) -> Case:
    """Check every field, appending to `errors`; the returned Case is only used if none were found."""
    errors.extend((str(k), "unknown key") for k in raw if k not in CASE_KEYS)
    images = _parse_images(raw.get("images", []), folder, checked, errors)
    videos = _parse_videos(raw.get("videos", []), folder, checked, errors)
    messages = _parse_prompt(raw.get("prompt"), len(images) if images is not None else None, errors,
                             len(videos) if videos is not None else None)
    return Case(
        id=case_id or "",
        source=file,
        images=images or (),
        messages=messages,
        max_new_tokens=_parse_max_new_tokens(raw.get("max_new_tokens", DEFAULT_MAX_NEW_TOKENS), errors),
        tags=_parse_tags(raw.get("tags", []), errors),
        thresholds=_parse_thresholds(raw.get("thresholds", {}), errors),
        videos=videos or (),
    )


def _parse_images(value: Any, folder: Path, checked: dict[Path, str | None],
                  errors: Errors) -> tuple[Path, ...] | None:
    """Real image paths inside `folder`, each decoded once per load (`checked`), or None when the
    list itself is malformed (the image count cannot be checked)."""
    if not isinstance(value, list):
        errors.append(("images", "must be a list of file paths"))
        return None
    paths: list[Path] = []
    for i, item in enumerate(value):
        if not isinstance(item, str) or not item:
            errors.append((f"images[{i}]", "must be a non-empty string"))
            continue
        path, refused = resolve_image(folder, item)
        if path is None:
            errors.append((f"images[{i}]", str(refused)))
            continue
        if path not in checked:
            checked[path] = image_problem(path)
        if checked[path]:
            errors.append((f"images[{i}]", str(checked[path])))
        paths.append(path)
    return tuple(paths)


def _parse_videos(value: Any, folder: Path, checked: dict[Path, str | None],
                  errors: Errors) -> tuple[tuple[Path, ...], ...] | None:
    """Each video a folder of frames inside `folder` (its image files, sorted by name), at least two, all
    decodable and of one size; None when the list itself is malformed."""
    if not isinstance(value, list):
        errors.append(("videos", "must be a list of folders of frames"))
        return None
    videos = []
    for i, item in enumerate(value):
        where = f"videos[{i}]"
        if not isinstance(item, str) or not item:
            errors.append((where, "must be a non-empty string: a folder of frame images"))
            continue
        target = (folder / item).resolve()
        if not target.is_relative_to(folder) or not target.is_dir():
            errors.append((where, f"{item}: not a folder inside {folder}"))
            continue
        frames = sorted(p for p in target.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
        if len(frames) < 2:
            errors.append((where, f"{item}: a video needs at least 2 frames (png or jpg), found {len(frames)}"))
            continue
        bad = [f"{p.name}: {checked.setdefault(p, image_problem(p))}" for p in frames
               if checked.setdefault(p, image_problem(p))]
        sizes = {_size(p) for p in frames} if not bad else set()
        if bad or len(sizes) > 1:
            errors.append((where, "; ".join(bad) or f"{item}: frames of different sizes {sorted(sizes)}"))
            continue
        videos.append(tuple(frames))
    return tuple(videos)


def _size(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:
        return image.size


def _parse_prompt(value: Any, n_images: int | None, errors: Errors, n_videos: int | None = 0) -> tuple[dict, ...]:
    if value is None:
        errors.append(("prompt", "required"))
        return ()
    if isinstance(value, str):
        if not value.strip():
            errors.append(("prompt", "must not be empty"))
        media = [{"type": "image"}] * (n_images or 0) + [{"type": "video"}] * (n_videos or 0)
        return ({"role": "user", "content": [*media, {"type": "text", "text": value}]},)
    if not isinstance(value, list) or not value:
        errors.append(("prompt", "must be a non-empty string or a non-empty list of messages"))
        return ()
    messages = tuple(_parse_message(m, f"prompt[{i}]", errors) for i, m in enumerate(value))
    for kind, count in (("image", n_images), ("video", n_videos)):
        n_parts = sum(p["type"] == kind for m in messages for p in m["content"])
        if count is not None and n_parts != count:
            errors.append(("prompt", f"has {n_parts} {kind} parts but the case has {count} {kind}s"))
    return messages


def _parse_message(value: Any, where: str, errors: Errors) -> dict:
    if not isinstance(value, dict):
        errors.append((where, "message must be a mapping with 'role' and 'content'"))
        return {"role": None, "content": []}
    errors.extend((f"{where}.{k}", "unknown key") for k in value if k not in ("role", "content"))
    role = value.get("role")
    if role not in ROLES:
        errors.append((f"{where}.role", f"must be one of {', '.join(ROLES)}, got {_show(role)}"))
    content = value.get("content")
    if isinstance(content, str):
        if not content.strip():
            errors.append((f"{where}.content", "must not be empty"))
        return {"role": role, "content": [{"type": "text", "text": content}]}
    if not isinstance(content, list) or not content:
        errors.append((f"{where}.content", "must be a non-empty string or a non-empty list of parts"))
        return {"role": role, "content": []}
    parts = [_parse_part(p, f"{where}.content[{j}]", errors) for j, p in enumerate(content)]
    return {"role": role, "content": [p for p in parts if p is not None]}


def _parse_part(value: Any, where: str, errors: Errors) -> dict | None:
    kind = value.get("type") if isinstance(value, dict) else None
    if kind in ("image", "video"):
        errors.extend((f"{where}.{k}", f"unknown key ({kind}s come from the case's '{kind}s' list)")
                      for k in value if k != "type")
        return {"type": kind}
    if kind == "text":
        errors.extend((f"{where}.{k}", "unknown key") for k in value if k not in ("type", "text"))
        text = value.get("text")
        if not isinstance(text, str) or not text.strip():
            errors.append((f"{where}.text", "must be a non-empty string"))
        return {"type": "text", "text": text}
    errors.append((f"{where}.type", "part must be a mapping with type 'image', 'video' or 'text'"))
    return None


def _parse_max_new_tokens(value: Any, errors: Errors) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_NEW_TOKENS_LIMIT:
        errors.append(("max_new_tokens",
                       f"must be an integer from 1 to {MAX_NEW_TOKENS_LIMIT}, got {_show(value)}"))
        return DEFAULT_MAX_NEW_TOKENS
    return value


def _parse_tags(value: Any, errors: Errors) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(t, str) and t for t in value):
        errors.append(("tags", "must be a list of non-empty strings"))
        return ()
    return tuple(value)


def _parse_thresholds(value: Any, errors: Errors) -> dict:
    if not isinstance(value, dict):
        errors.append(("thresholds", "must be a mapping of metric name to number"))
        return {}
    out: dict[str, int | float] = {}
    for name, limit in value.items():
        unknown = key_problem(str(name), CASE_THRESHOLD_KEYS)
        if unknown:
            errors.append((f"thresholds.{name}", unknown))
            continue
        # NaN would make every comparison false, silently passing or failing the case.
        if isinstance(limit, bool) or not isinstance(limit, (int, float)) or math.isnan(limit):
            errors.append((f"thresholds.{name}", f"must be a number, got {_show(limit)}"))
            continue
        out[str(name)] = limit
    return out
