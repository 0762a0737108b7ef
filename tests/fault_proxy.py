"""A fault-injecting HTTP proxy on 127.0.0.1, for the HTTP engine robustness tests.

It forwards every request to a real server and passes its answer back, except
for the requests a rule picks (those whose body contains the rule's marker,
e.g. a case's prompt text), which it answers the way a broken server would:

  status     an HTTP error status (503) with a short plain-text body
  close      closes the connection without answering
  malformed  the server's real answer cut in half: 200 with truncated JSON
  stall      never answers (until the proxy stops)

Standard library server plus httpx (the harness's own HTTP client): no extra dependency.

`python -m tests.fault_proxy UPSTREAM PORT` runs one with no rules in its own process until SIGINT: a stand-in
server for a test of how the harness starts and stops a server (tests/servers.py), answering with a real one.
"""
from __future__ import annotations

import sys
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType

import httpx

FAULTS = ("status", "close", "malformed", "stall")
STATUS_BODY = b"upstream overloaded (injected by the fault proxy)"


@dataclass(frozen=True)
class Rule:
    """Answer a request whose body contains `marker` with `fault`."""

    marker: str
    fault: str

    def __post_init__(self) -> None:
        if self.fault not in FAULTS:
            raise ValueError(f"fault {self.fault!r}: use one of {', '.join(FAULTS)}")


@dataclass
class FaultProxy:
    """Started as a context manager; `url` is what the engine under test is pointed at."""

    upstream: str
    rules: list[Rule]
    port: int = 0  # 0: a free one
    injected: list[Rule] = field(default_factory=list)  # one entry per request answered badly
    forwarded: int = 0

    def __post_init__(self) -> None:
        self._release = threading.Event()
        self._client = httpx.Client(base_url=self.upstream, timeout=600)
        self._lock = threading.Lock()
        handler = type("Handler", (_Handler,), {"proxy": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> FaultProxy:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._release.set()  # stalled requests give up
        self._server.shutdown()
        self._server.server_close()
        self._client.close()

    def rule_for(self, body: bytes) -> Rule | None:
        text = body.decode(errors="replace")
        return next((r for r in self.rules if r.marker in text), None)

    def count(self, rule: Rule | None) -> None:
        with self._lock:
            if rule is None:
                self.forwarded += 1
            else:
                self.injected.append(rule)


class _Handler(BaseHTTPRequestHandler):
    proxy: FaultProxy
    protocol_version = "HTTP/1.1"  # keep-alive, as the server behind it does

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def _handle(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        rule = self.proxy.rule_for(body) if self.command == "POST" else None
        self.proxy.count(rule)
        if rule is not None and rule.fault == "close":
            self.close_connection = True  # the socket closes with nothing written
            return
        if rule is not None and rule.fault == "stall":
            self.proxy._release.wait()
            self.close_connection = True
            return
        if rule is not None and rule.fault == "status":
            self._reply(503, STATUS_BODY, "text/plain")
            return
        headers = {"Content-Type": self.headers.get("Content-Type", "application/json")}
        upstream = self.proxy._client.request(self.command, self.path, content=body or None, headers=headers)
        content = upstream.content
        if rule is not None:  # malformed
            content = content[:len(content) // 2]
        self._reply(upstream.status_code, content, upstream.headers.get("Content-Type", "application/json"))

    def _reply(self, status: int, content: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(content)))
        self.end_headers()
        self.wfile.write(content)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the test asserts on `injected` and `forwarded`, not on a log."""


if __name__ == "__main__":
    with FaultProxy(sys.argv[1], [], port=int(sys.argv[2])):
        try:
            threading.Event().wait()
        except KeyboardInterrupt:  # how the harness stops a server it started
            pass
