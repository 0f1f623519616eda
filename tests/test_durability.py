"""Nothing acknowledged is lost: SIGKILL a real server mid-stream, restart, count every event."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import duckdb
import httpx
import pytest

from tests.conftest import transaction

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(
    project: Path, data: Path, port: int, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    command = [
        sys.executable,
        "-m",
        "decisionloop",
        "serve",
        "--project",
        str(project),
        "--data-dir",
        str(data),
        "--port",
        str(port),
    ]
    environment = {**os.environ, **(env or {})}
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=environment
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(process.stderr.read().decode() if process.stderr else "died")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.1)
    process.kill()
    raise AssertionError("server did not start")


def test_sigkill_loses_no_acknowledged_event(project_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "state"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = start_server(project_dir, data, port)
    acknowledged: dict[str, str | None] = {}  # event_id -> decision_id (None: ingest only)
    lock = threading.Lock()
    stop = threading.Event()

    def sender(worker: int) -> None:
        n = 0
        with httpx.Client(base_url=url, timeout=5) as client:
            while not stop.is_set():
                n += 1
                ids = [f"w{worker}-{n}-{k}" for k in range(3 if n % 3 == 0 else 1)]
                events = [transaction(i, customer_id=f"C{worker}", amount=float(n)) for i in ids]
                try:
                    if n % 3 == 0:
                        response = client.post("/v1/decide/batch", json=events)
                        answers = (
                            response.json()["decisions"] if response.status_code == 200 else []
                        )
                    elif n % 3 == 1:
                        response = client.post("/v1/decide", json=events[0])
                        answers = [response.json()] if response.status_code == 200 else []
                    else:
                        response = client.post("/v1/events", json=events[0])
                        answers = [{"event_id": ids[0]}] if response.status_code == 200 else []
                except httpx.HTTPError:
                    continue  # the server died with this request in flight: not acknowledged
                with lock:
                    for answer in answers:
                        acknowledged[answer["event_id"]] = answer.get("decision_id")

    threads = [threading.Thread(target=sender, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 60
    while len(acknowledged) < 400 and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(server.pid, signal.SIGKILL)  # mid-stream: requests are in flight right now
    server.wait()
    stop.set()
    for thread in threads:
        thread.join()
    assert len(acknowledged) >= 400

    # Restart on the same files: every acknowledged decision is there and a repeat returns it.
    server = start_server(project_dir, data, port)
    try:
        with httpx.Client(base_url=url, timeout=10) as client:
            decided = {e: d for e, d in acknowledged.items() if d is not None}
            for event_id, decision_id in list(decided.items())[:50]:
                assert client.get(f"/v1/decisions/{decision_id}").status_code == 200
                again = client.post("/v1/decide", json=transaction(event_id))
                assert again.json()["decision_id"] == decision_id
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)

    with duckdb.connect(str(data / "source.duckdb"), read_only=True) as db:
        counts = dict(db.execute("SELECT event_id, count(*) FROM events GROUP BY 1").fetchall())
        decisions = dict(db.execute("SELECT event_id, decision_id FROM decisions").fetchall())
    missing = [e for e in acknowledged if e not in counts]
    assert missing == []
    assert max(counts.values()) == 1  # stored once, in-flight ones included
    for event_id, decision_id in acknowledged.items():
        if decision_id is not None:
            assert decisions[event_id] == decision_id
