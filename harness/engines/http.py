"""The shape of every HTTP engine adapter (vLLM server, SGLang, any OpenAI-compatible endpoint).

Like lm-eval's TemplateAPI, a server adapter writes only what differs between
servers: `payload` (the request body for one case), `parse` (the response
body as an EngineOutput) and, when the harness may start the server itself,
`server_command`. This base class starts that server on 127.0.0.1 on a free
port (or attaches to `settings.url` and never stops it), waits for its health
endpoint, sends the cases concurrently (bounded, so the server batches them),
yields each output as it completes, and stops the server it started by its
own PID, also when the run fails. The server stays in the engine worker's
process group, so it and anything it starts end with the worker when the
harness ends that group (`engines.lifetime`).

A request that fails is that case's error, in words: the HTTP status and the
start of the body, "connection closed by the server", "malformed JSON at line
L column C", or no answer within `request_timeout` seconds (an engine option,
the per-case timeout of HTTP engines; default 600). A server this adapter
started that has died is no one case's fault: run() raises, and the worker's
client starts a fresh one for the cases not yet sent.
"""
from __future__ import annotations

import concurrent.futures
import json
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

from harness.core.schema import EngineOutput
from harness.engines.base import Engine, EngineSettings, Request

HEALTH_TIMEOUT_S = 300.0
REQUEST_TIMEOUT_S = 600.0
CONCURRENCY = 8
BODY_EXCERPT = 300  # characters of a bad response shown in the case's error
# Engine options the adapter reads itself; never passed on to a server's command line.
ADAPTER_OPTIONS = frozenset({"request_timeout", "served_model"})


class ServerDied(RuntimeError):
    """The server this adapter started exited mid-run: no request can succeed until a new one starts."""


class HTTPEngine(Engine):
    """A server behind HTTP; subclasses say how to start it, what to send and how to read the answer."""

    health_path: str = "/health"

    def __init__(self, settings: EngineSettings) -> None:
        super().__init__(settings)
        self.url = (settings.url or "").rstrip("/")
        self._server: subprocess.Popen[bytes] | None = None
        self._log: Any = None
        self.timeout_s = float(settings.options.get("request_timeout", REQUEST_TIMEOUT_S))
        self.client = httpx.Client(timeout=self.timeout_s)

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
                                            stderr=subprocess.STDOUT)
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
            try:
                for future in concurrent.futures.as_completed(futures):
                    yield future.result()
            finally:
                for future in futures:  # a dead server (raised) or a closed stream: send nothing more
                    future.cancel()

    def _one(self, request: Request) -> EngineOutput:
        start = time.perf_counter()
        try:
            path, payload = self.payload(request)
        except (OSError, ValueError) as exc:  # an unreadable image, a form the server cannot take
            return self._failed(request, f"{type(exc).__name__}: {exc}")
        try:
            response = self.client.post(self.url + path, json=payload)
        except httpx.TransportError as exc:
            self._raise_if_dead()
            return self._failed(request, self._transport_error(exc, path))
        if response.status_code != 200:
            return self._failed(request, f"HTTP {response.status_code} from {path}: {_excerpt(response.content)}")
        try:
            body = response.json()
        except json.JSONDecodeError as exc:
            return self._failed(request, f"malformed JSON from {path} at line {exc.lineno} column {exc.colno} "
                                         f"({exc.msg}); the body starts {_excerpt(response.content)}")
        try:
            output = self.parse(request, body)
        except (ValueError, KeyError, TypeError, IndexError) as exc:  # valid JSON, not the expected answer
            return self._failed(request, f"{type(exc).__name__}: {exc}")
        output.timings["request_s"] = time.perf_counter() - start
        return output

    def _failed(self, request: Request, error: str) -> EngineOutput:
        return EngineOutput.failed(request.case_id, self.name, error, request.variant)

    def _transport_error(self, exc: httpx.TransportError, path: str) -> str:
        if isinstance(exc, httpx.TimeoutException):
            return f"no response from {path} within {self.timeout_s:g} s ({type(exc).__name__})"
        if isinstance(exc, httpx.RemoteProtocolError):
            return f"connection closed by the server before a complete response to {path} ({exc})"
        return f"cannot reach {self.url}{path}: {type(exc).__name__}: {exc}"

    def _raise_if_dead(self) -> None:
        """A transport failure because the server this adapter started has exited is the run's, not the case's."""
        if self._server is None:
            return
        try:  # a killed server drops its connections a moment before it can be reaped
            self._server.wait(timeout=2)
        except subprocess.TimeoutExpired:
            return
        code = self._server.returncode
        how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"
        log = f" (its log: {self._log.name})" if self._log is not None else ""
        raise ServerDied(f"{self.name} server (pid {self._server.pid}) {how}{log}")

    def close(self) -> None:
        """Stop the server this adapter started (never one it attached to): SIGINT, on which it stops what
        it started itself, then SIGKILL. Its log file stays behind (its path is in the engine info)."""
        self.client.close()
        if self._log is not None:
            self._log.close()
        if self._server is None or self._server.poll() is not None:
            return
        self._server.send_signal(signal.SIGINT)
        try:
            self._server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._server.kill()
            self._server.wait()

    def info(self) -> dict[str, Any]:
        return {**super().info(), "url": self.url, "started_server": self._server is not None,
                "server_log": self._log.name if self._log is not None else None}


def _excerpt(body: bytes) -> str:
    text = body.decode(errors="replace")
    return repr(text[:BODY_EXCERPT]) + (f" ... ({len(text)} characters)" if len(text) > BODY_EXCERPT else "")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
