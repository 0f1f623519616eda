"""`serve` closes idle keep-alive connections after ``keep_alive_s``, not uvicorn's 5 s."""

from __future__ import annotations

import signal
import socket
import time
from pathlib import Path

import pytest

from tests.test_durability import free_port, start_server

pytestmark = pytest.mark.slow
REQUEST = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"


def test_idle_connections_are_closed_after_the_configured_time(
    project_dir: Path, tmp_path: Path
) -> None:
    port = free_port()
    server = start_server(project_dir, tmp_path / "data", port, {"DECISIONLOOP_KEEP_ALIVE_S": "2"})
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            conn.sendall(REQUEST)
            assert conn.recv(4096).startswith(b"HTTP/1.1 200")
            time.sleep(1.0)  # idle, shorter than 2 s: still open
            conn.sendall(REQUEST)
            assert conn.recv(4096).startswith(b"HTTP/1.1 200")
            time.sleep(3.5)  # idle past 2 s, not past uvicorn's default of 5 s
            assert conn.recv(4096) == b""  # closed by the service
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
