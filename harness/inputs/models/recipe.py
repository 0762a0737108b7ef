"""A tiny model as data: one declaration per architecture, one builder for all of them.

A parity run needs a real checkpoint of every architecture it judges, with no hub access and in seconds,
so each built-in model is a `Recipe`: its special tokens, chat template, config and processor as the
transformers classes take them (`Part`), which special tokens it may emit, the weight renames vLLM needs,
and which of the harness's paths apply to it and why not. `build` turns any recipe into a checkpoint:
a byte-level BPE tokenizer trained on the shared seeded corpus, weights drawn from a fixed seed
(`weights.redraw`), `save_pretrained`, renames. Everything is a pure function of the declaration, these
modules and the library versions, so `recipe_hash` names the result and two builds are byte-identical.
"""
from __future__ import annotations

import hashlib
import inspect
import json
import shutil
from dataclasses import dataclass, field, fields
from importlib.metadata import version
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from harness.inputs.models import tokenizer as tk
from harness.inputs.models import weights

# The builder's own sources: a change to any of them renames every built model.
BUILDER = tuple(Path(__file__).with_name(f"{name}.py") for name in ("corpus", "tokenizer", "weights", "recipe"))


@dataclass(frozen=True)
class Token:
    """A special token's text in a declaration, replaced by its id when the recipe is built."""

    text: str


def tok(text: str) -> Token:
    return Token(text)


class _Vocab:
    """The padded vocabulary size in a declaration (`tokenizer.padded_vocab`), known only once the tokenizer is trained."""

    def __repr__(self) -> str:
        return "VOCAB"


VOCAB = _Vocab()


@dataclass(frozen=True)
class Part:
    """A transformers class by name and the keyword arguments it is constructed with (nested Parts first)."""

    cls: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Template:
    """A chat template as data: turn markers around each message, one string per image or video part.

    `turn` and `end` open and close a message ({role}, or {Role} capitalised, stands for its role after
    `roles` renames); `generation` is what `add_generation_prompt` appends; `prefix` opens the whole
    conversation (a BOS token).
    """

    turn: str = "<|im_start|>{role}\n"
    end: str = "<|im_end|>\n"
    generation: str = "<|im_start|>assistant\n"
    image: str = "<image>"
    video: str | None = None
    prefix: str = ""
    roles: Mapping[str, str] = field(default_factory=dict)

    def render(self) -> str:
        """The Jinja source transformers saves with the tokenizer and processor."""
        lines = [f"{{{{- {_literal(self.prefix)} }}}}"] if self.prefix else []
        lines.append("{%- for message in messages %}")
        if self.roles:
            lines.append(f"    {{%- set role = {json.dumps(dict(self.roles))}.get(message['role'], message['role']) %}}")
        lines += [
            f"    {{{{- {self._turn_expr()} }}}}",
            "    {%- if message['content'] is string %}",
            "        {{- message['content'] }}",
            "    {%- else %}",
            "        {%- for part in message['content'] %}",
            "            {%- if part['type'] == 'image' or 'image' in part or 'image_url' in part %}",
            f"                {{{{- {_literal(self.image)} }}}}",
        ]
        if self.video is not None:
            lines += ["            {%- elif part['type'] == 'video' or 'video' in part %}",
                      f"                {{{{- {_literal(self.video)} }}}}"]
        lines += [
            "            {%- elif 'text' in part %}",
            "                {{- part['text'] }}",
            "            {%- endif %}",
            "        {%- endfor %}",
            "    {%- endif %}",
            f"    {{{{- {_literal(self.end)} }}}}",
            "{%- endfor %}",
            "{%- if add_generation_prompt %}",
            f"    {{{{- {_literal(self.generation)} }}}}",
            "{%- endif %}",
        ]
        return "\n".join(lines)

    def _turn_expr(self) -> str:
        role = "role" if self.roles else "message['role']"
        for marker, expr in (("{role}", role), ("{Role}", f"{role} | capitalize")):
            if marker in self.turn:
                before, after = self.turn.split(marker, 1)
                return " + ".join([*([_literal(before)] if before else []), expr, *([_literal(after)] if after else [])])
        return _literal(self.turn)


def _literal(text: str) -> str:
    """A Jinja string literal for `text`."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n") + "'"


@dataclass(frozen=True)
class Recipe:
    """One built-in tiny model of one architecture (see the module docstring).

    `stops`: special tokens besides `eos` that end generation. `emitted`: the special tokens the model
    may emit (default: `eos`; the others get zero output rows, see `weights.redraw`). `head_std=None`
    keeps the output head as the general draw left it. `processor_options`: per-request options that
    change the image tokens (the processor-options variant), None where there are none. `video_options`:
    what every video request pins on both sides' processors. `image_embeds`: why precomputed image
    embeddings are not judged on this architecture, None where they are. `hook`: run after saving, for
    what the data cannot say.
    """

    name: str
    model: str
    description: str
    tokens: Sequence[str]
    bos: str
    eos: str
    pad: str
    config: Part
    processor: Part
    template: Template | None = Template()
    tokenizer_kwargs: Mapping[str, Any] = field(default_factory=dict)
    stops: Sequence[str] = ()
    emitted: Sequence[str] | None = None
    renames: Sequence[tuple[str, str]] = ()
    head_std: float | None = weights.WEIGHT_STD
    embed_std: float = weights.EMBED_STD
    zero_mean_norms: Sequence[str] = ()
    processor_options: Mapping[str, Any] | None = None
    video_options: Mapping[str, Any] = field(default_factory=dict)
    image_embeds: str | None = None
    hook: Callable[[Path], None] | None = None
    kind: str = "built"

    @property
    def architecture(self) -> str:
        return self.model

    def recipe_hash(self) -> str:
        """The declaration, the builder's modules and the libraries whose behaviour shapes the output.

        torch is included with transformers and tokenizers because the weights are drawn from its
        random number generator.
        """
        h = hashlib.sha256(_canonical(self).encode())
        for path in BUILDER:
            h.update(path.read_bytes())
        for package in ("transformers", "tokenizers", "torch"):
            h.update(f"\0{package}=={version(package)}".encode())
        return h.hexdigest()

    def build(self, out_dir: Path) -> None:
        """Write the tiny model, tokenizer and processor to `out_dir` with `save_pretrained`."""
        processor, ids, raw = self.build_processor()
        size = len(processor.tokenizer)
        config = construct(self.config, ids, tk.padded_vocab(size))
        never = [ids[t] for t in self.tokens if t not in self._emitted()] + tk.not_text(raw, list(self.tokens))
        model_cls = _transformers(self.model)
        weights.draw_and_save(
            model_cls, config, processor, Path(out_dir), tokenizer_size=size, never_emitted=never,
            bos=ids[self.bos], eos=[ids[t] for t in (self.eos, *self.stops)], pad=ids[self.pad],
            renames=list(self.renames), head_std=self.head_std, embed_std=self.embed_std,
            zero_mean_norms=self.zero_mean_norms,
        )
        if self.hook:
            self.hook(Path(out_dir))

    def build_processor(self) -> tuple[Any, dict[str, int], Any]:
        """The processor (with its tokenizer), the special tokens' ids and the raw tokenizer."""
        raw = tk.train_bpe(list(self.tokens))
        ids = {t: raw.token_to_id(t) for t in self.tokens}
        template = self.template.render() if self.template else None
        extra = {"chat_template": template} if template else {}
        tokenizer = _transformers("PreTrainedTokenizerFast")(
            tokenizer_object=raw, eos_token=self.eos, pad_token=self.pad, **extra, **dict(self.tokenizer_kwargs))
        kwargs = {"tokenizer": tokenizer, **extra}
        processor = construct(Part(self.processor.cls, {**self.processor.kwargs, **kwargs}), ids, None)
        return processor, ids, raw

    def _emitted(self) -> set[str]:
        return set(self.emitted) if self.emitted is not None else {self.eos}


def _transformers(name: str) -> Any:
    import transformers

    return getattr(transformers, name)


def construct(value: Any, ids: Mapping[str, int], vocab: int | None) -> Any:
    """`value` with Tokens as ids, VOCAB as the vocabulary size and Parts constructed, depth first."""
    if isinstance(value, Part):
        return _transformers(value.cls)(**construct(dict(value.kwargs), ids, vocab))
    if isinstance(value, Token):
        return ids[value.text]
    if isinstance(value, _Vocab):
        return vocab
    if isinstance(value, Mapping):
        return {k: construct(v, ids, vocab) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(construct(v, ids, vocab) for v in value)
    return value


def _canonical(value: Any) -> str:
    """A stable text of a declaration (hooks by their source), for its hash."""
    if isinstance(value, Recipe | Part | Template | Token):
        return f"{type(value).__name__}(" + ",".join(
            f"{f.name}={_canonical(getattr(value, f.name))}" for f in fields(value)) + ")"
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{k!r}:{_canonical(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_canonical(v) for v in value) + "]"
    if callable(value) and not isinstance(value, _Vocab):
        return inspect.getsource(value)
    return repr(value)


@dataclass(frozen=True)
class Committed:
    """A built-in model whose files are committed (trained, not drawn): building copies them.

    Its name in the cache changes only when the committed files do, not with the library versions.
    """

    name: str
    model: str
    description: str
    directory: Path
    kind: str = "trained"

    @property
    def architecture(self) -> str:
        return self.model

    def _files(self) -> list[Path]:
        if not self.directory.is_dir():
            raise FileNotFoundError(f"committed model missing: {self.directory}")
        return sorted(p for p in self.directory.rglob("*") if p.is_file())

    def recipe_hash(self) -> str:
        """A hash of every committed file, by relative path."""
        h = hashlib.sha256()
        for path in self._files():
            h.update(path.relative_to(self.directory).as_posix().encode() + b"\0"
                     + hashlib.sha256(path.read_bytes()).digest())
        return h.hexdigest()

    def build(self, out_dir: Path) -> None:
        """Copy the committed files. Never retrains."""
        for path in self._files():
            target = Path(out_dir) / path.relative_to(self.directory)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
