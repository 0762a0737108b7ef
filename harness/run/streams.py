"""Several engine streams at once: one thread per engine worker, their outputs merged in arrival order.

The threads only wait on the workers' pipes (the compute is in the worker processes), so the
run's own bookkeeping (judging, writing results) stays in the calling thread and needs no locks.
"""
from __future__ import annotations

import threading
from collections.abc import Iterator
from queue import Queue
from typing import Any

from harness.core.schema import EngineOutput

_END = object()


class Streams:
    """Launch streams by name, then iterate (name, output) as outputs arrive; (name, None) marks
    the end of that stream. Iteration ends when no launched stream is left running."""

    def __init__(self) -> None:
        self._queue: Queue[tuple[str, Any]] = Queue()
        self._stop = threading.Event()
        self._running = 0

    def launch(self, name: str, outputs: Iterator[EngineOutput]) -> None:
        self._running += 1
        threading.Thread(target=self._drain, args=(name, outputs), name=f"stream-{name}", daemon=True).start()

    def _drain(self, name: str, outputs: Iterator[EngineOutput]) -> None:
        end: object = _END
        try:
            for output in outputs:
                if self._stop.is_set():
                    break
                self._queue.put((name, output))
            close = getattr(outputs, "close", None)
            if close is not None:
                close()  # a generator's finally stops its worker process
        except BaseException as exc:  # a harness bug in a stream: raised again in the calling thread
            end = exc
        finally:
            self._queue.put((name, end))  # always: the calling thread counts the streams still running

    def __iter__(self) -> Iterator[tuple[str, EngineOutput | None]]:
        while self._running:
            name, item = self._queue.get()
            if isinstance(item, BaseException):
                self._running -= 1
                self.stop()
                raise item
            if item is _END:
                self._running -= 1
                yield name, None
            else:
                yield name, item

    def stop(self) -> None:
        """Ask every stream to stop at its next output (the run is over or broke)."""
        self._stop.set()
