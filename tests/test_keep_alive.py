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


def response(conn: socket.socket) -> bytes:
    """One whole response: the headers, then as many body bytes as Content-Length says."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(4096)
        assert chunk, "the connection closed before a response"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        body += conn.recv(4096)
    return head


def test_idle_connections_are_closed_after_the_configured_time(
    project_dir: Path, tmp_path: Path
) -> None:
    port = free_port()
    server = start_server(project_dir, tmp_path / "data", port, {"DECISIONLOOP_KEEP_ALIVE_S": "2"})
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            conn.sendall(REQUEST)
            assert response(conn).startswith(b"HTTP/1.1 200")
            time.sleep(1.0)  # idle, shorter than 2 s: still open
            conn.sendall(REQUEST)
            assert response(conn).startswith(b"HTTP/1.1 200")
            time.sleep(3.0)  # idle past 2 s, and 1 s short of uvicorn's default of 5 s
            conn.settimeout(0.5)  # so that a connection still open fails here, not at 5 s
            assert conn.recv(4096) == b""  # closed by the service
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
