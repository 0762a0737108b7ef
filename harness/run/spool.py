"""Engine outputs waiting for the rest of their case, kept on disk rather than in memory.

A case is judged when its last output arrives, and engine groups run one after another: the first group's
outputs of every case wait for the last group's. Held in memory that is the whole run's per-position data
(about 1 MB a 1,500-token output as Python objects: gigabytes for a nightly). So outputs are held in memory
up to `limit` positions, and past it each output that arrives is written to a file in OUT/.spool while the
ledger keeps a light copy without its per-position fields; when the case closes its outputs are read back,
judged, and their files removed. A run whose outputs fit (the default suite, or streams that finish cases
as they go) writes nothing. A private scratch folder of this process, written and read by it alone: pickle is
the fastest faithful copy.
"""
from __future__ import annotations

import pickle
import shutil
from pathlib import Path
from typing import Any

from harness.core.schema import POSITIONAL, EngineOutput

DIR = ".spool"
LIMIT = 1_000_000  # positions held in memory (about 0.7 GB of Python objects) before outputs go to disk


def positions(output: EngineOutput) -> int:
    return len(output.prompt_logprobs) + len(output.output_logprobs) + sum(len(c.output_logprobs)
                                                                           for c in output.completions)


def _light(output: EngineOutput) -> EngineOutput:
    """The output without its per-position fields: what the ledger holds while the case waits."""
    light = EngineOutput(case_id=output.case_id, engine=output.engine)
    for name, value in vars(output).items():
        if name not in (*POSITIONAL[EngineOutput], "completions"):
            setattr(light, name, value)
    return light


class Spool:
    """`put` an output as it arrives (it, or its light copy), `full` to read it back, `drop` once judged."""

    def __init__(self, out_dir: Path, limit: int | None = None) -> None:
        self.dir, self.limit, self.held = Path(out_dir) / DIR, LIMIT if limit is None else limit, 0
        self.kept: dict[int, tuple[EngineOutput, int]] = {}  # id of an output held in memory -> it, its positions
        # id of a light copy -> the copy (held, so that its id is never reused while here) and its output's file
        self.files: dict[int, tuple[EngineOutput, Path]] = {}
        self.count = 0
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
        self.dir.mkdir(parents=True, exist_ok=True)
        self.count += 1
        path = self.dir / f"{self.count}.pickle"
        path.write_bytes(pickle.dumps(output, protocol=pickle.HIGHEST_PROTOCOL))
        light = _light(output)
        self.files[id(light)] = (light, path)
        return light

    def full(self, output: Any) -> Any:
        """The output as it arrived (None and outputs never spooled as they are)."""
        held = self.files.get(id(output))
        return output if held is None else pickle.loads(held[1].read_bytes())

    def drop(self, output: Any) -> None:
        """The output is judged: its file goes."""
        held = self.files.pop(id(output), None)
        if held is not None:
            held[1].unlink(missing_ok=True)
        kept = self.kept.pop(id(output), None)
        if kept is not None:
            self.held -= kept[1]

    def close(self) -> None:
        self.files.clear()
        self.kept.clear()
        shutil.rmtree(self.dir, ignore_errors=True)
