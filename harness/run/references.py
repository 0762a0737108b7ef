"""Stored references: the HF reference recorded once, keyed by content, checked for staleness.

Layout under `references/<model-key>/` (plain JSON, diff-friendly, never pickle):

- `<case-id>.<key[:16]>.json`: one case's reference outputs (the reference itself, the
  flat-grey image-sensitivity run, re-runs with other decoders' pixels), its floors per
  engine dtype (`harness.judging.compare.floor`: the reference's own error, so a stored run pays
  nothing for them), the prompt as rendered, the content key's fields and the provenance
  of the recording, including the hardware it was computed on.
- `processor-<sha[:16]>.json`: what a stored run needs instead of the processor: the chat
  template, the image token id and the text of every token id (for the report).

The key hashes what determines the reference's outputs: the case's chat messages and the
processor/tokenizer/chat-template files (together: the rendered prompt and its ids), every
image's bytes, max_new_tokens, top-k and dtype. So renaming a case keeps its reference
and editing one cannot reuse an old one; the case id in the file name only lets a stale
reference be found and the field that changed be named. Weights and library versions are
provenance, checked on use: a reference whose weights hash or transformers/torch version
differs from this machine's is stale, never compared silently. The hardware is not: another
CPU changes a float32 reference in its last bits (other SIMD kernels), far inside the floor every
verdict is judged with, so a reference recorded on one machine serves every other.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, is_dataclass
from functools import cached_property
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from harness.core.files import write_atomic
from harness.core.schema import SCHEMA_VERSION, EngineOutput, Floor, from_dict, plain
from harness.inputs.cases import Case
from harness.inputs.models import file_digests
from harness.inputs.prompt import shown_token_ids
from harness.run.variants import SETTINGS_CLASSES, rerun_name

FORMAT = 3  # 2: floors per engine dtype, hardware in the provenance; 3: floors of the re-runs too
DEFAULT_DIR = Path(__file__).resolve().parents[2] / "references"
# Files that decide the rendered prompt, its token ids and the pixels the model sees; the
# rest of a checkpoint (weights, config) is its weights hash.
PROCESSOR_FILE = re.compile(r"(tokenizer.*|chat_template.*|.*processor_config\.json|special_tokens_map\.json|"
                            r"vocab\..*|merges\.txt|added_tokens\.json)")
DOC_FILE = re.compile(r"README.*|LICENSE.*|.*\.md|training\.json")  # documentation: changes no output
# A reference recorded under other versions of what computes it (transformers' model code, torch's
# kernels, Pillow's decoders, torchvision's fast image processors) is stale.
VERSIONED = ("transformers", "torch", "pillow", "torchvision")


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def model_key(name: str) -> str:
    """The folder a model's references live in: a built-in name as is, a path by its last part."""
    return re.sub(r"[^A-Za-z0-9._-]+", "--", Path(name.rstrip("/")).name if Path(name).is_dir() else name)


def checkpoint_hashes(model_dir: Path) -> dict[str, str]:
    """sha256 of a checkpoint's processor files and of the rest (weights and config), docs left out."""
    digests = {"processor": hashlib.sha256(), "weights": hashlib.sha256()}
    for name, digest in file_digests(model_dir).items():
        if name.startswith(".") or "/." in name:  # download caches (.cache/huggingface) hold timestamps
            continue
        base = name.rsplit("/", 1)[-1]
        part = "processor" if PROCESSOR_FILE.fullmatch(base) else "weights"
        if part == "weights" and DOC_FILE.fullmatch(base):
            continue
        digests[part].update(name.encode() + b"\0" + digest)
    return {f"{part}_sha256": h.hexdigest() for part, h in digests.items()}


def library_versions() -> dict[str, str | None]:
    """Installed versions without importing the libraries (a stored run never imports them). The
    local label goes (torch's `+cpu`, `+cu124`): a CPU and a CUDA build of one release compute alike."""
    found: dict[str, str | None] = {}
    for name in VERSIONED:
        try:
            found[name] = version(name).split("+")[0]
        except PackageNotFoundError:
            found[name] = None
    return found


def key_fields(case: Case, processor_sha256: str, top_k: int, dtype: str) -> dict[str, Any]:
    """What a reference's outputs depend on, field by field (so a change can be named)."""
    fields = {
        "messages": _sha(_canonical(list(case.messages))),
        "processor": processor_sha256,
        "images": [_sha(Path(p).read_bytes()) for p in case.images],
        "max_new_tokens": case.max_new_tokens,
        "top_k": top_k,
        "dtype": dtype,
    }
    if case.videos:  # only where there are videos: the keys of image cases stay what they were
        fields["videos"] = [[_sha(Path(f).read_bytes()) for f in frames] for frames in case.videos]
    return fields


def content_key(fields: dict[str, Any]) -> str:
    return _sha(_canonical(fields))


def changed_fields(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """What differs between two key field sets, in words a user can act on."""
    changes = []
    if old.get("messages") != new["messages"]:
        changes.append("prompt (the case's chat messages)")
    if old.get("processor") != new["processor"]:
        changes.append("processor, tokenizer or chat template files")
    before, after = old.get("images", []), new["images"]
    if len(before) != len(after):
        changes.append(f"number of images ({len(before)} -> {len(after)})")
    else:
        changes += [f"image bytes of images[{i}]" for i, (a, b) in enumerate(zip(before, after)) if a != b]
    changes += [f"frames of videos[{i}]" for i, (a, b) in enumerate(zip(old.get("videos", []), new.get("videos", [])))
                if a != b]
    if len(old.get("videos", [])) != len(new.get("videos", [])):
        changes.append(f"number of videos ({len(old.get('videos', []))} -> {len(new.get('videos', []))})")
    changes += [f"{name} ({old.get(name)} -> {new[name]})" for name in ("max_new_tokens", "top_k", "dtype")
                if old.get(name) != new[name]]
    return changes


def same_values(values: Mapping[str, Any]) -> dict[str, Any]:
    """A re-run's request fields as a stored reference records them: plain JSON data (tuples as lists), so the
    recorded values and the current ones compare equal when they are."""
    return json.loads(json.dumps({k: asdict(v) if is_dataclass(v) and not isinstance(v, type) else v
                                  for k, v in values.items()}))


def recorded_values(recorded: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A re-run's request fields as recorded, read back as the settings they are (a field a setting gained since
    takes its default) in `same_values`' form: a recording stays fresh when only a new, unused field was added."""
    if recorded is None:
        return None
    return same_values({k: from_dict(SETTINGS_CLASSES[k], v) if k in SETTINGS_CLASSES and isinstance(v, dict) else v
                        for k, v in recorded.items()})


@dataclass
class StoredReference:
    """One case's recorded reference outputs, by request variant (`reference`, `flat-grey`,
    `reference-<decoder>`); `same_pixels[decoder]` says a decoder needed no re-run."""

    key: str
    fields: dict[str, Any]
    case_id: str
    prompt_text: str
    outputs: dict[str, EngineOutput]
    same_pixels: dict[str, bool] = field(default_factory=dict)
    # variant -> the request fields its re-run (`reference-<variant>`) was recorded with (`reference_same`)
    same: dict[str, dict[str, Any]] = field(default_factory=dict)
    # engine dtype (and dtype|re-run, harness.judging.compare.floor.floor_key) -> the case's floor
    floors: dict[str, Floor] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    format: int = FORMAT


@dataclass
class ProcessorInfo:
    """What a stored run needs instead of loading the processor."""

    processor_sha256: str
    chat_template: str | None
    image_token: int | None
    token_texts: dict[str, str]

    def texts(self, outputs: Iterable[EngineOutput]) -> dict[str, str]:
        """Text of every output token and top-k candidate (as `Prompter.token_texts`)."""
        return {str(i): self.token_texts.get(str(i), f"<id {i}>") for i in shown_token_ids(outputs)}


@dataclass
class Status:
    """Whether a case has a usable stored reference: `fresh`, `stale` (with what changed) or `missing`."""

    state: str
    changes: list[str] = field(default_factory=list)
    path: Path | None = None
    reference: StoredReference | None = None

    def describe(self) -> str:
        if self.state == "fresh":
            return f"fresh ({self.path.name})" if self.path else "fresh"
        if self.state == "missing":
            return "missing: no stored reference for this case (record it with `vlm-parity record`)"
        where = f" ({self.path.name})" if self.path else ""
        return f"stale{where}: changed: {'; '.join(self.changes)}"


def dump(value: Any) -> str:
    """JSON with one line per token position (a list item with no nested records): a re-recorded
    reference diffs line by line, and floats round-trip exactly."""
    def flat(item: Any) -> bool:
        values = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        return not any(isinstance(v, dict) or (isinstance(v, list) and not flat(v)) for v in values)

    def render(item: Any, indent: str, in_list: bool = False) -> str:
        inner = indent + " "
        if isinstance(item, dict) and item and not (in_list and flat(item)):
            body = ",\n".join(f"{inner}{json.dumps(k)}: {render(v, inner)}" for k, v in item.items())
            return "{\n" + body + "\n" + indent + "}"
        if isinstance(item, list) and any(isinstance(v, dict) for v in item):
            return "[\n" + ",\n".join(inner + render(v, inner, True) for v in item) + "\n" + indent + "]"
        return json.dumps(item, allow_nan=False, separators=(",", ":"), ensure_ascii=False)
    return render(value, "") + "\n"


class ReferenceStore:
    """The references of one reference model: `root/<model-key>/`."""

    def __init__(self, root: Path, model_name: str, model: str, engine: str = "hf") -> None:
        self.dir = Path(root) / model_key(model_name)
        self.model = model
        self.engine = engine  # the reference engine: another one's outputs are not this one's references
        self.local = Path(model).is_dir()
        self.versions = library_versions()

    @cached_property
    def _hashes(self) -> dict[str, str] | None:
        """Read once, and only when a reference is looked up (a live run never hashes the checkpoint)."""
        return checkpoint_hashes(Path(self.model)) if self.local else None

    @cached_property
    def processor_sha256(self) -> str | None:
        """This checkpoint's processor hash; without the checkpoint here, the store's only recorded one
        (with several, which one applies cannot be told: None, and every case is missing)."""
        if self._hashes:
            return self._hashes["processor_sha256"]
        recorded = list(self.dir.glob("processor-*.json"))
        return json.loads(recorded[0].read_text())["processor_sha256"] if len(recorded) == 1 else None

    @property
    def weights_sha256(self) -> str | None:
        return self._hashes["weights_sha256"] if self._hashes else None

    @cached_property
    def processor(self) -> ProcessorInfo | None:
        """The recorded chat template, image token and token texts for this checkpoint's processor."""
        sha = self.processor_sha256
        path = self.dir / f"processor-{sha[:16]}.json" if sha else None
        return from_dict(ProcessorInfo, json.loads(path.read_text())) if path and path.is_file() else None

    def path_for(self, case_id: str, key: str) -> Path:
        return self.dir / f"{case_id}.{key[:16]}.json"

    def find(self, key: str) -> Path | None:
        return next(iter(sorted(self.dir.glob(f"*.{key[:16]}.json"))), None)

    def of_case(self, case_id: str) -> list[Path]:
        """References recorded under this case id, newest first (to name what changed)."""
        found = [p for p in self.dir.glob(f"{glob_escape(case_id)}.*.json")
                 if re.fullmatch(re.escape(case_id) + r"\.[0-9a-f]{16}\.json", p.name)]
        return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)

    def load(self, path: Path) -> StoredReference:
        """A stored reference; ValueError names the file and what is wrong."""
        try:
            return from_dict(StoredReference, json.loads(path.read_text(encoding="utf-8")))
        except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{path}: unreadable stored reference: {type(exc).__name__}: {exc}") from exc

    def fields(self, case: Case, top_k: int, dtype: str) -> dict[str, Any]:
        return key_fields(case, self.processor_sha256 or "", top_k, dtype)

    def status(self, case: Case, top_k: int, dtype: str, needs: Sequence[str] = (),
               floors: Mapping[str, Mapping[str, dict[str, Any]]] | None = None,
               same: Mapping[str, dict[str, Any]] | None = None) -> Status:
        """The case's stored reference and whether it still describes the case. `needs` are the
        decoders whose re-run the planned variants compare with, `floors` the floor runs each planned
        engine dtype is judged with (`harness.run.plan.floor_runs`), `same` the re-runs with a variant's
        request fields (`harness.run.plan.reference_same`)."""
        try:
            fields = self.fields(case, top_k, dtype)
        except OSError as exc:
            return Status("missing", [f"cannot read an image: {exc}"])
        key = content_key(fields)
        path = self.find(key)
        if path is None:
            for old in self.of_case(case.id):
                try:
                    changes = changed_fields(self.load(old).fields, fields)
                except ValueError as exc:
                    changes = [str(exc)]
                return Status("stale", changes or ["content key"], old)
            return Status("missing")
        try:
            ref = self.load(path)
        except ValueError as exc:
            return Status("stale", [str(exc)], path)
        changes = [] if ref.key == key else [f"content key (the file holds {ref.key[:16]}...)"]
        if ref.format != FORMAT:  # the file's own version: what a stored reference holds (outputs, floors)
            changes.append(f"file format {ref.format} (this harness: {FORMAT})")
        if self.processor is None:
            changes.append(f"no processor file for processor {str(self.processor_sha256)[:16]} in {self.dir}")
        changes += self._provenance_changes(ref.provenance)
        lacking = [d for d in needs if case.images and rerun_name(d) not in ref.outputs
                   and not ref.same_pixels.get(d)]
        changes += [f"no reference re-run with {d if d == 'options' else d + ' pixels'} (recorded before a variant "
                    "needed it)" for d in lacking]
        for name, values in (same or {}).items():
            if rerun_name(name) not in ref.outputs:
                changes.append(f"no reference re-run with the {name} variant's {', '.join(values)} (recorded "
                               "before a variant needed it)")
            elif recorded_values(ref.same.get(name)) != same_values(values):
                changes.append(f"the {name} variant's {', '.join(values)} changed since its re-run was recorded")
        if case.images and "flat-grey" not in ref.outputs:
            changes.append("no flat-grey run (image-sensitivity check)")
        for engine_dtype, runs in (floors or {}).items():
            recorded = ref.floors.get(engine_dtype)
            if recorded is None:
                changes.append(f"no floor for a {engine_dtype} engine (record it with --floor-dtypes)")
            elif recorded.runs != dict(runs):
                changes.append(f"the {engine_dtype} floor was measured with other runs ({', '.join(recorded.runs)})")
        return Status("stale" if changes else "fresh", changes, path, ref)

    def _provenance_changes(self, recorded: dict[str, Any]) -> list[str]:
        changes = []
        if recorded.get("reference_engine") != self.engine:
            changes.append(f"reference engine ({recorded.get('reference_engine')} -> {self.engine})")
        if self.weights_sha256 and recorded.get("weights_sha256") != self.weights_sha256:
            changes.append("model weights hash")
        for name in VERSIONED:
            if recorded.get(name) != self.versions[name]:
                changes.append(f"{name} version ({recorded.get(name)} -> {self.versions[name]})")
        return changes

    def save(self, ref: StoredReference) -> Path:
        path = self.path_for(ref.case_id, ref.key)
        write_atomic(path, dump(plain(ref)))
        return path

    def save_processor(self, info: ProcessorInfo) -> Path:
        path = self.dir / f"processor-{info.processor_sha256[:16]}.json"
        write_atomic(path, dump(asdict(info)))
        return path

    def unused(self, keys: set[str]) -> list[Path]:
        """Reference files no current case's key points at (renamed or edited cases' old references)."""
        return sorted(p for p in self.dir.glob("*.json") if not p.name.startswith("processor-")
                      and p.name.rsplit(".", 2)[-2] not in {k[:16] for k in keys})


def glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)


def provenance(model_name: str, store: ReferenceStore, info: dict[str, Any], dtype: str, device: str,
               case: Case, harness_version: str) -> dict[str, Any]:
    """Where a reference came from: enough to tell whether it still describes the model and stack."""
    return {
        "model": model_name, "reference_engine": store.engine, "weights_sha256": store.weights_sha256, "processor_sha256": store.processor_sha256,
        "image_processor": info.get("image_processor"), "attn_implementation": info.get("attn_implementation"),
        **store.versions, "dtype": dtype, "device": device, "hardware": info.get("hardware"),
        "schema_version": SCHEMA_VERSION, "harness_version": harness_version, "case_file": str(case.source),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


def clean_sample_path(root: Path, reference_model: str, engine: str, device: str, dtype: str) -> Path:
    """Where `vlm-parity calibrate --record` keeps a clean run's ratios to the floor (the suite drift test's
    baseline): beside the reference model's stored references, one file per engine, device kind (cpu, cuda)
    and dtype. The engine's checkpoint is not in the key: an engine-side checkpoint that moved the whole suite
    is what the test is for (the file says which checkpoint and machines it was measured with)."""
    kind = device.split(":")[0]
    return Path(root) / model_key(reference_model) / "clean" / f"{engine}-{kind}-{dtype}.json"


def load_clean_sample(path: Path) -> dict[str, Any] | None:
    """The recorded clean sample ({ratios: {metric: [...]}, machines, runs, command, ...}), None where none is."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not a clean sample: {exc}") from exc
