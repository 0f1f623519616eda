"""`decisionloop demo` end to end: the service answers /v1/decide while the replay runs."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.test_durability import free_port

pytestmark = pytest.mark.slow


def test_demo_serves_decisions_while_replaying(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [
        sys.executable, "-m", "decisionloop", "demo", "--customers", "150", "--days", "12",
        "--live-days", "2", "--rate", "150", "--port", str(port), "--no-keep-serving",
        "--directory", str(tmp_path / "demo"),
    ]  # fmt: skip
    env = {**os.environ, "COLUMNS": "200"}  # rich wraps at 80 columns without a terminal
    demo = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    try:
        decided_during_replay = []
        output = None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and demo.poll() is None:
            try:
                summary = httpx.get(f"{url}/v1/summary", timeout=2).json()
            except httpx.HTTPError:
                time.sleep(0.2)
                continue
            event = {
                "event_id": f"probe-{len(decided_during_replay)}",
                "type": "transaction",
                "occurred_at": "2026-06-12T02:30:00+00:00",
                # A customer of its own, without history: exactly one rule fires.
                "customer_id": f"C-probe-{len(decided_during_replay)}",
                "account_id": f"A-probe-{len(decided_during_replay)}",
                "amount": 1500.0,
                "currency": "EUR",
                "channel": "transfer",
                "direction": "debit",
            }
            try:
                response = httpx.post(f"{url}/v1/decide", json=event, timeout=5)
            except httpx.TransportError:
                # The replay may have ended and the demo stopped its server in between: a
                # connection still in the listen backlog is then refused or reset. Anything else
                # (the server gone while the demo runs on) is a failure.
                try:
                    output = demo.communicate(timeout=30)[0].decode()
                except subprocess.TimeoutExpired:
                    raise AssertionError("/v1/decide failed while the demo kept running") from None
                break
            assert response.status_code == 200, response.text
            assert response.json()["outcome"] == "challenge"  # night_large_transfer
            decided_during_replay.append(sum(summary["outcomes"].values()))
            time.sleep(0.3)
        if output is None:
            output = demo.communicate(timeout=60)[0].decode()
    finally:
        demo.kill()
    assert demo.returncode == 0, output
    # Answered several times while the replay was adding decisions of its own.
    assert len(decided_during_replay) >= 3
    assert decided_during_replay[-1] > decided_during_replay[0]
    assert "live page:" in output
    assert "0 errors" in output
    assert (tmp_path / "demo" / "events.jsonl").stat().st_size > 0
