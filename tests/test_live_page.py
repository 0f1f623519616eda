"""The live page at ``/``: decisions, outcome mix, reasons, top rules, rate; offline and escaped."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from decisionloop.api.app import create_app
from decisionloop.project.scaffold import init_project
from decisionloop.runtime import open_service
from decisionloop.settings import load_settings
from decisionloop.ui.live import RateMeter, rate_from_recent
from tests.conftest import transaction

NIGHT_TRANSFER = {
    "occurred_at": "2026-06-01T02:00:00+00:00",
    "channel": "transfer",
    "amount": 1500.0,
    "balance_before": 9000.0,
}
HOSTILE = '<script>alert("x")</script>&\''


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    init_project(tmp_path / "project")
    settings = load_settings(
        project_dir=tmp_path / "project", data_dir=tmp_path / "state", source={"type": "memory"}
    )
    service = open_service(settings)
    with TestClient(create_app(service, settings)) as test_client:
        yield test_client


def decide(client: TestClient, event: dict[str, Any]) -> dict[str, Any]:
    response = client.post("/v1/decide", json=event)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def rows(html: str, table: str) -> list[str]:
    """The text of each body row of a table of the page, tags stripped and spaces collapsed."""
    match = re.search(rf'<table class="{table}">.*?<tbody>(.*?)</tbody>', html, re.S)
    assert match, f"no {table} table"
    return [
        " ".join(re.sub(r"<[^>]+>", " ", row).split())
        for row in re.findall(r"<tr[^>]*>(.*?)</tr>", match.group(1), re.S)
    ]


def test_page_is_self_contained_and_polls_the_fragment(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    html = page.text
    assert '<script src="/static/htmx.min.js"' in html
    assert '<link rel="stylesheet" href="/static/live.css">' in html
    assert 'hx-get="/ui/summary"' in html
    assert 'hx-trigger="every 1s' in html
    assert 'href="/docs"' in html
    assert 'href="/metrics"' in html
    # Nothing is loaded from elsewhere: the page works offline.
    assert not re.search(r'(src|href)="(https?:)?//', html)
    assert "No decisions yet" in html


def test_htmx_and_css_are_served_from_static(client: TestClient) -> None:
    js = client.get("/static/htmx.min.js")
    assert js.status_code == 200
    assert "javascript" in js.headers["content-type"]
    assert 'version:"2.' in js.text
    css = client.get("/static/live.css")
    assert css.status_code == 200
    assert css.headers["content-type"].startswith("text/css")


def test_page_and_fragment_show_decisions_reasons_and_outcomes(client: TestClient) -> None:
    night = decide(client, transaction("night-1", **NIGHT_TRANSFER))
    assert night["outcome"] == "challenge"
    quiet = decide(client, transaction("quiet-1", customer_id="C000002"))
    assert quiet["outcome"] == "approve"

    fragment = client.get("/ui/summary")
    assert fragment.status_code == 200
    assert fragment.headers["cache-control"] == "no-store"
    assert "<html" not in fragment.text  # a fragment, swapped into <main>
    for html in (client.get("/").text, fragment.text):
        latest = rows(html, "decisions")
        assert len(latest) == 2
        assert latest[0].split()[1:6] == ["quiet-1", "transaction", "approve", "0", "no"]
        newest, older = latest
        assert "µs" in newest
        assert "night-1 transaction challenge 30 night_large_transfer" in older
        # The values the rule saw, shown when its reason is expanded.
        assert "Large outbound transfer between midnight and 5am" in older
        assert "amount 1,500" in older
        assert "occurred_at 2026-06-01T02:00:00+00:00" in older
        assert "channel transfer" in older

        mix = rows(html, "mix")
        assert mix == [
            "approve 1 50.0%",
            "challenge 1 50.0%",
            "review 0 0.0%",
            "decline 0 0.0%",
        ]
        assert 'class="o-approve" style="width: 50.000%"' in html
        assert rows(html, "rules") == ["night_large_transfer 1 50.0%"]
        assert "Decisions / s" in html
        assert "Events stored" in html


def test_latency_is_the_sum_of_the_trace(client: TestClient) -> None:
    decision = decide(client, transaction("t-1"))
    total = sum(decision["trace_us"].values())
    shown = rows(client.get("/ui/summary").text, "decisions")[0].split()[-2:]
    if total < 1000:
        assert shown == [f"{total:,.0f}", "µs"]
    else:
        assert shown == [f"{total / 1000:,.2f}", "ms"]


def test_shadow_rules_are_marked(client: TestClient) -> None:
    for i in range(2):
        response = client.post(
            "/v1/events",
            json={
                "event_id": f"login-{i}",
                "type": "login",
                "occurred_at": "2026-06-01T11:50:00+00:00",
                "customer_id": "C000001",
                "device_id": "D1",
                "ip": "192.0.2.1",
                "success": False,
                "method": "password",
            },
        )
        assert response.status_code == 200, response.text
    decision = decide(client, transaction("after-logins"))
    [reason] = decision["reasons"]
    assert reason["id"] == "failed_logins_then_payment"
    assert reason["shadow"] is True
    assert decision["outcome"] == "approve"  # shadow rules are recorded, never acted on

    html = client.get("/ui/summary").text
    assert rows(html, "rules") == ["failed_logins_then_payment shadow 1 100.0%"]
    assert '<tr class="is-shadow">' in html
    assert 'class="reason kind-rule is-shadow"' in html
    assert re.search(r'Events stored</span>\s*<b class="value">3</b>', html)


def test_hostile_strings_are_escaped(client: TestClient) -> None:
    decide(client, transaction(HOSTILE, **NIGHT_TRANSFER))
    for html in (client.get("/").text, client.get("/ui/summary").text):
        assert "<script>alert" not in html
        assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;&amp;&#39;" in html
    assert client.get("/v1/summary").json()["recent"][0]["event_id"] == HOSTILE


def test_summary_json_has_decisions_per_second(client: TestClient) -> None:
    for i in range(3):
        decide(client, transaction(f"r-{i}"))
    summary = client.get("/v1/summary").json()
    assert summary["decisions_per_second"] > 0
    assert summary["outcomes"] == {"approve": 3}
    assert [d["event_id"] for d in summary["recent"]] == ["r-2", "r-1", "r-0"]


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_rate_meter_averages_the_last_window() -> None:
    clock = FakeClock(1000.0)
    meter = RateMeter(window=10, history=5, clock=clock)
    now = meter.sample(0)
    assert meter.rate(now) is None  # one sample: no rate yet
    for total in range(50, 1001, 50):  # 50 decisions a second for 20 s
        clock.now += 1
        now = meter.sample(total)
    assert meter.rate(now) == pytest.approx(50.0)
    assert meter.history(now) == [pytest.approx(50.0)] * 5
    clock.now += 0.4
    now = meter.sample(1000)  # same second as the last sample: replaces it
    assert meter.history(now)[-1] == pytest.approx(50 / 1.4)
    clock.now += 5
    now = meter.sample(1100)  # nobody looked for 5 s: those seconds share the average
    assert meter.history(now) == [pytest.approx(20.0)] * 5
    assert meter.rate(now) == pytest.approx((1100 - 800) / (1025.4 - 1016))


def test_rate_from_recent_decisions_when_no_samples_yet() -> None:
    def at(epoch: float) -> dict[str, Any]:
        from datetime import UTC, datetime

        return {"decided_at": datetime.fromtimestamp(epoch, UTC).isoformat()}

    now = 2_000_000_000.0
    recent = [at(now - i * 0.5) for i in range(30)]  # 2 a second for 15 s, newest first
    assert rate_from_recent(recent, now, 10, uptime=100, full=False) == pytest.approx(2.1)
    # Started 4 s ago: the rate is over the time the service has run.
    assert rate_from_recent(recent[:8], now, 10, uptime=4, full=False) == pytest.approx(2.0)
    # A full recent list inside the window: the rate over the span it covers.
    assert rate_from_recent(recent[:8], now, 10, uptime=100, full=True) == pytest.approx(8 / 3.5)
    assert rate_from_recent([], now, 10, uptime=100, full=False) == 0.0
