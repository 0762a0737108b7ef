"""Engine outputs waiting for the rest of their case, kept on disk rather than in memory.

A case is judged when its last output arrives, and engine groups run one after another: the first group's
outputs of every case wait for the last group's. Held in memory that is the whole run's per-position data
(about 1 MB a 1,500-token output as Python objects: gigabytes for a nightly). So outputs are held in memory
up to `limit` positions, and past it each output that arrives is appended to one scratch file in OUT/.spool
while the ledger keeps a light copy without its per-position fields; when the case closes its outputs are read
back from their offsets and judged. A run whose outputs fit (the default suite, or streams that finish cases
as they go) writes nothing; the file goes when the run's engines are done. A private scratch file of this
process, written and read by it alone, unbuffered at offsets (a seek of a buffered file flushes it, which
cost more than the writes): the prompt's entries as their columns' bytes (`harness.core.scores.Scores`, read
back as arrays over those bytes, no object per position), the short output steps as plain tuples, all through
`marshal` (the light copy keeps every other field).
"""
from __future__ import annotations

import marshal
import os
import shutil
from dataclasses import replace
from pathlib import Path
from typing import IO, Any

import numpy as np

from harness.core.schema import Completion, EngineOutput, Scores, TokenLogprobs, without_positions

DIR = ".spool"
LIMIT = 300_000  # positions held in memory before outputs go to disk (a prompt position about 100 bytes as
# columns, an output step about 1 kB as its object)


def positions(output: EngineOutput) -> int:
    return len(output.prompt_logprobs) + len(output.output_logprobs) + sum(len(c.output_logprobs)
                                                                           for c in output.completions)


Packed = tuple[Any, ...]


def _pack(entries: list[TokenLogprobs | None]) -> list[Packed | None]:
    return [None if e is None else (e.token_id, e.logprob, e.top, e.ranks, e.rank) for e in entries]


def _unpack(entries: list[Packed | None]) -> list[TokenLogprobs | None]:
    return [None if e is None else TokenLogprobs(e[0], e[1], e[2], e[3], e[4]) for e in entries]


def _columns(scores: Scores) -> list[tuple[str, tuple[int, ...], bytes] | None]:
    return [None if c is None else (c.dtype.str, c.shape, c.tobytes()) for c in scores.columns()]


def _scores(columns: list[tuple[str, tuple[int, ...], bytes] | None]) -> Scores:
    return Scores(*(None if c is None else np.frombuffer(c[2], dtype=c[0]).reshape(c[1]) for c in columns))


def _positions(output: EngineOutput) -> bytes:
    return marshal.dumps((output.prompt_ids, _columns(output.prompt_logprobs), output.output_ids,
                          _pack(output.output_logprobs), [(c.output_ids, _pack(c.output_logprobs))
                                                          for c in output.completions]))


def _restore(light: EngineOutput, data: bytes) -> EngineOutput:
    prompt_ids, prompt, output_ids, output, children = marshal.loads(data)
    completions: list[Completion] = [replace(c, output_ids=ids, output_logprobs=_unpack(lps))
                                     for c, (ids, lps) in zip(light.completions, children)]
    return replace(light, prompt_ids=prompt_ids, prompt_logprobs=_scores(prompt), output_ids=output_ids,
                   output_logprobs=_unpack(output), completions=completions)


class Spool:
    """`put` an output as it arrives (it, or its light copy), `full` to read it back, `drop` once judged."""

    def __init__(self, out_dir: Path, limit: int | None = None) -> None:
        self.dir, self.limit, self.held = Path(out_dir) / DIR, LIMIT if limit is None else limit, 0
        self.kept: dict[int, tuple[EngineOutput, int]] = {}  # id of an output held in memory -> it, its positions
        # id of a light copy -> the copy (held, so that its id is never reused while here) and where its output is
        self.files: dict[int, tuple[EngineOutput, tuple[int, int]]] = {}
        self.file: IO[bytes] | None = None
        self.end = 0  # the scratch file's length: written and read at offsets, never seeking (a seek flushes)
        shutil.rmtree(self.dir, ignore_errors=True)

    def put(self, output: EngineOutput) -> EngineOutput:
        """An output with nothing per position (an error) is kept as it is, and so is one within the limit."""
        n = positions(output)
        if not n:
            return output
        if self.held + n <= self.limit:
            self.held += n
            self.kept[id(output)] = (output, n)
            return output
        if self.file is None:
            self.dir.mkdir(parents=True, exist_ok=True)
            self.file = open(self.dir / "outputs.marshal", "w+b", buffering=0)  # open until the engines end
        data = _positions(output)
        offset, view = self.end, memoryview(data)
        while view:  # a regular file takes it whole, short of a full disk or a signal
            view = view[os.pwrite(self.file.fileno(), view, self.end):]
            self.end = offset + len(data) - len(view)
        light = without_positions(output)  # what the ledger holds while the case waits
        self.files[id(light)] = (light, (offset, len(data)))
        return light

    def full(self, output: Any) -> Any:
        """The output as it arrived (None and outputs never spooled as they are)."""
        held = self.files.get(id(output))
        if held is None or self.file is None:
            return output
        offset, length = held[1]
        return _restore(held[0], os.pread(self.file.fileno(), length, offset))

    def drop(self, output: Any) -> None:
        """The output is judged: it is forgotten (its bytes stay in the scratch file until the run's end)."""
        self.files.pop(id(output), None)
        kept = self.kept.pop(id(output), None)
        if kept is not None:
            self.held -= kept[1]

    def close(self) -> None:
        self.files.clear()
        self.kept.clear()
        if self.file is not None:
            self.file.close()
            self.file = None
        shutil.rmtree(self.dir, ignore_errors=True)
