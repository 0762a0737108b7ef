"""A real vLLM OpenAI server started by a test (not by the harness), for the attach and HTTP-fault tests; and a
stand-in server the harness starts in its place, for the test of how the harness starts and stops a server."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from harness.engines.base import EngineSettings
from harness.engines.http import free_port
from harness.engines.vllm_server import VLLMServerEngine


@contextmanager
def vllm_server(model: Path, wait_s: float = 300) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """The server process and its URL once /health answers; stopped by its process group afterwards."""
    port = free_port()
    command, env = VLLMServerEngine(EngineSettings(str(model))).server_command(port)
    proc = subprocess.Popen(command, env={**os.environ, **env}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + wait_s
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                if httpx.get(url + "/health", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(1)
        assert proc.poll() is None, f"the vLLM server exited with code {proc.returncode}"
        yield proc, url
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=60)


PROXY_MODULE = "tests.fault_proxy"


class ProxiedVLLMServer(VLLMServerEngine):
    """The vLLM server adapter whose server, the one the harness starts and stops, is a forwarding proxy
    (tests/fault_proxy.py) to the running vLLM server at the engine option `upstream`: the harness's own
    start, health wait and stop, and real vLLM answers, without a second vLLM start."""

    def server_command(self, port: int) -> tuple[list[str], dict[str, str]]:
        return [sys.executable, "-m", PROXY_MODULE, self.settings.options["upstream"], str(port)], {}
