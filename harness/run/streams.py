"""Several engine streams at once: one thread per engine worker, their outputs merged in arrival order.

The threads only wait on the workers' pipes (the compute is in the worker processes), so the
run's own bookkeeping (judging, writing results) stays in the calling thread and needs no locks.
The queue between them is bounded: an engine faster than the judging waits for it, rather than its
outputs (a megabyte each at 1,500 positions) piling up in memory.
"""
from __future__ import annotations

import threading
from collections.abc import Iterator
from queue import Full, Queue
from typing import Any

from harness.core.schema import EngineOutput

_END = object()
WAITING = 32  # outputs the streams may hand over before the calling thread has taken them


class Streams:
    """Launch streams by name, then iterate (name, output) as outputs arrive; (name, None) marks
    the end of that stream. Iteration ends when no launched stream is left running."""

    def __init__(self) -> None:
        self._queue: Queue[tuple[str, Any]] = Queue(WAITING)
        self._stop = threading.Event()
        self._running = 0

    def launch(self, name: str, outputs: Iterator[EngineOutput]) -> None:
        self._running += 1
        threading.Thread(target=self._drain, args=(name, outputs), name=f"stream-{name}", daemon=True).start()

    def _drain(self, name: str, outputs: Iterator[EngineOutput]) -> None:
        end: object = _END
        try:
            for output in outputs:
                if self._stop.is_set() or not self._put((name, output)):
                    break
            close = getattr(outputs, "close", None)
            if close is not None:
                close()  # a generator's finally stops its worker process
        except BaseException as exc:  # a harness bug in a stream: raised again in the calling thread
            end = exc
        finally:
            self._put((name, end))  # always, unless the run stopped: the calling thread counts the streams running

    def _put(self, item: tuple[str, Any]) -> bool:
        """Hand one output over, waiting while the queue is full; False once the run stops (nobody takes it)."""
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except Full:
                continue
        return False

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
