"""The shape of every HTTP engine adapter (vLLM server, SGLang, any OpenAI-compatible endpoint).

Like lm-eval's TemplateAPI, a server adapter writes only what differs between
servers: `payload` (the request body for one case), `parse` (the response
body as an EngineOutput) and, when the harness may start the server itself,
`server_command`. This base class starts that server on 127.0.0.1 on a free
port (or attaches to `settings.url` and never stops it), waits for its health
endpoint, sends the cases concurrently (bounded, so the server batches them),
yields each output as it completes, and stops the server it started by its
own PID, also when the run fails.
"""
from __future__ import annotations

import concurrent.futures
import os
import signal
import socket
import subprocess
import tempfile
import time
from abc import abstractmethod
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx

from harness.engines.base import Engine, EngineSettings, Request
from harness.schema import EngineOutput

HEALTH_TIMEOUT_S = 300.0
REQUEST_TIMEOUT_S = 600.0
CONCURRENCY = 8


class HTTPEngine(Engine):
    """A server behind HTTP; subclasses say how to start it, what to send and how to read the answer."""

    health_path: str = "/health"

    def __init__(self, settings: EngineSettings) -> None:
        super().__init__(settings)
        self.url = (settings.url or "").rstrip("/")
        self._server: subprocess.Popen[bytes] | None = None
        self._log: Any = None
        self.client = httpx.Client(timeout=REQUEST_TIMEOUT_S)

    def server_command(self, port: int) -> tuple[list[str], dict[str, str]]:
        """The command line and extra environment that start the server on 127.0.0.1:port."""
        raise NotImplementedError(f"engine {self.name!r} cannot start its server: give its URL (--engine-url)")

    @abstractmethod
    def payload(self, request: Request) -> tuple[str, dict[str, Any]]:
        """(path, JSON body) for one request."""

    @abstractmethod
    def parse(self, request: Request, body: dict[str, Any]) -> EngineOutput:
        """The server's answer as an EngineOutput; raise ValueError on a malformed body."""

    def start(self, requests: Sequence[Request]) -> None:
        if not self.url:
            port = free_port()
            command, env = self.server_command(port)
            self._log = tempfile.NamedTemporaryFile("w+b", prefix=f"vlm-parity-{self.name}-", suffix=".log",
                                                    delete=False)
            self._server = subprocess.Popen(command, env={**os.environ, **env}, stdout=self._log,
                                            stderr=subprocess.STDOUT, start_new_session=True)
            self.url = f"http://127.0.0.1:{port}"
        self._wait_healthy()

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + HEALTH_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._server is not None and self._server.poll() is not None:
                raise RuntimeError(f"{self.name} server exited with code {self._server.returncode} before it was "
                                   f"healthy; its log ends:\n{self.server_log_tail()}")
            try:
                if self.client.get(self.url + self.health_path, timeout=5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(1)
        raise RuntimeError(f"{self.name} at {self.url} not healthy after {HEALTH_TIMEOUT_S:.0f} s")

    def server_log_tail(self, chars: int = 2000) -> str:
        if self._log is None:
            return ""
        return Path(self._log.name).read_bytes()[-chars:].decode(errors="replace")

    def run(self, requests: Sequence[Request]) -> Iterator[EngineOutput]:
        """Send every request at once (bounded), so the server batches them; yield each as it completes."""
        with concurrent.futures.ThreadPoolExecutor(max_workers=CONCURRENCY) as pool:
            futures = {pool.submit(self._one, r): r for r in requests}
            for future in concurrent.futures.as_completed(futures):
                yield future.result()

    def _one(self, request: Request) -> EngineOutput:
        start = time.perf_counter()
        try:
            path, body = self.payload(request)
            response = self.client.post(self.url + path, json=body)
            if response.status_code != 200:
                raise ValueError(f"HTTP {response.status_code}: {response.text[:500]}")
            output = self.parse(request, response.json())
        except (httpx.HTTPError, ValueError, KeyError, TypeError, IndexError, OSError) as exc:
            return EngineOutput.failed(request.case_id, self.name, f"{type(exc).__name__}: {exc}", request.variant)
        output.timings["request_s"] = time.perf_counter() - start
        return output

    def close(self) -> None:
        """Stop the server this adapter started (never one it attached to): SIGINT, then SIGKILL.
        Its log file stays behind (its path is in the engine info) for a post-mortem."""
        self.client.close()
        if self._log is not None:
            self._log.close()
        if self._server is None or self._server.poll() is not None:
            return
        os.killpg(self._server.pid, signal.SIGINT)
        try:
            self._server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self._server.pid, signal.SIGKILL)
            self._server.wait()

    def info(self) -> dict[str, Any]:
        return {**super().info(), "url": self.url, "started_server": self._server is not None,
                "server_log": self._log.name if self._log is not None else None}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
