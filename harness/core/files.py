"""Files written so that a reader never sees half of one (results, reports, stored references)."""
from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any


def write_atomic(path: Path, data: str | bytes | Iterable[str]) -> Path:
    """Write `path` so that a reader sees the old file or the whole new one, never half of it:
    a temporary sibling (unique, so two writers cannot clobber it), fsync'd, then renamed. `data` may be
    chunks of text, written as they come (a document too large to hold in memory)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes it private; results and references are shared files
        with os.fdopen(fd, "wb") as f:
            for chunk in [data] if isinstance(data, (str, bytes)) else data:
                f.write(chunk.encode() if isinstance(chunk, str) else chunk)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_table(path: Path, table: Any, **options: Any) -> Path:
    """An Arrow table as a zstd Parquet file, written as `write_atomic` writes (pyarrow is imported here, when a
    table is written: importing the harness stays light)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd", **options)
    return write_atomic(path, sink.getvalue().to_pybytes())
