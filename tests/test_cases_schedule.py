"""Post-event monitoring inside the service: scheduled periods of event time, and on demand.

The bank of ``test_cases_monitor`` (t1, t2 on 06-01 hit ``watch.big``, t3 ``watch.cash``, t5 on
06-03 ``watch.big``), with ``cases.yaml`` asking for a daily period and a one-hour lag.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from decisionloop.api.app import create_app
from decisionloop.cases.schedule import SCHEDULE, MonitorSchedule, period_end
from decisionloop.engine.service import DecisionService
from decisionloop.errors import DefinitionError, StorageError
from decisionloop.runtime import open_service, start_monitoring
from decisionloop.settings import Settings
from tests.conftest import cli, make_settings, plain, transaction
from tests.test_cases_monitor import EVENTS, WATCH

DAILY = "monitoring: {every: 1d, lag: 1h}\n"


def day(d: int, hour: int = 0) -> datetime:
    return datetime(2026, 6, d, hour, tzinfo=UTC)


@pytest.fixture
def settings(project_dir: Path, tmp_path: Path, isolated: None) -> Settings:
    (project_dir / "monitoring").mkdir(exist_ok=True)
    (project_dir / "monitoring" / "watch.yaml").write_text(WATCH)
    (project_dir / "cases.yaml").write_text(DAILY)
    return make_settings(project_dir, tmp_path / "state")


@pytest.fixture
def service(settings: Settings) -> Iterator[DecisionService]:
    svc = open_service(settings)
    try:
        svc.handle_sync(EVENTS, "stream")
        yield svc
    finally:
        svc.close()


def test_periods_are_aligned_to_every_in_event_time() -> None:
    every, lag = timedelta(hours=1), timedelta(minutes=15)
    assert period_end(day(3, 9) + timedelta(minutes=20), every, lag) == day(3, 9)
    assert period_end(day(3, 9) + timedelta(minutes=10), every, lag) == day(3, 8)
    assert period_end(day(3, 9), timedelta(days=1), timedelta(hours=1)) == day(3)


def test_scheduled_runs_follow_the_events_and_resume_where_they_ended(
    service: DecisionService,
) -> None:
    runner = service.monitoring
    assert runner is not None
    # Latest event 06-03 09:00, lag 1 h: the first run covers the last full day, 06-02.
    assert runner.due() == (day(2), day(3))
    first = runner.run_due()
    assert first is not None
    assert (first.trigger, first.events, first.alerts) == (SCHEDULE, 1, 0)  # t4 alone
    assert runner.run_due() is None  # nothing new is due
    # Two days later: one run over both days catches up; t5 (06-03) opens an alert.
    later = transaction("t6", occurred_at="2026-06-05T10:00:00+00:00", amount=10.0)
    service.handle_sync([later], "stream")
    second = runner.run_due()
    assert second is not None
    assert (second.period_start, second.period_end) == (day(3), day(5))
    assert (second.events, second.alerts, second.cases_opened) == (1, 1, 1)  # t6: not yet
    runs = service.alerts.cases.store.runs() if service.alerts else []
    assert [r.id for r in runs] == [second.id, first.id]  # newest first


def test_a_failed_run_is_recorded_and_the_period_retried(
    service: DecisionService, settings: Settings
) -> None:
    runner = service.monitoring
    assert runner is not None
    assert service.alerts is not None
    watch = settings.project_dir / "monitoring" / "watch.yaml"
    watch.write_text("name: watch\nrules:\n  - {id: oops, when: amount >>> 3}\n")
    with pytest.raises(DefinitionError):
        runner.run_due()
    failed = service.alerts.cases.store.runs()[0]
    assert failed.error is not None
    assert "DefinitionError" in failed.error
    assert service.alerts.cases.store.covered_until(SCHEDULE) is None
    watch.write_text(WATCH)
    retried = runner.run_due()
    assert retried is not None
    assert (retried.period_start, retried.error) == (day(2), None)


def test_the_schedule_starts_with_the_server_only_and_stops_with_the_service(
    settings: Settings,
) -> None:
    svc = open_service(settings)
    runner = svc.monitoring
    assert runner is not None
    thread = runner._thread
    assert not thread.is_alive()  # an import or a CLI command opening the service: no schedule
    start_monitoring(svc)  # what `serve` and the demo's server do
    assert thread.is_alive()
    svc.close()
    assert not thread.is_alive()
    with pytest.raises(StorageError, match="stopping"):
        runner.run(day(1), day(2), "api")  # a stopped service starts no run


def test_the_thread_runs_the_due_periods_by_itself(service: DecisionService) -> None:
    assert service.monitoring is not None
    assert service.alerts is not None
    store = service.alerts.cases.store
    runner = MonitorSchedule(
        service.monitoring.project_dir,
        service.monitoring.source,
        service.alerts.cases,
        service.ops,
        timedelta(days=1),
        timedelta(hours=1),
        check_every=0.02,
    )
    runner.start()
    try:
        for _ in range(500):  # a bounded wait for the thread's first check, not a timing claim
            if store.runs():
                break
            time.sleep(0.02)
    finally:
        runner.close()
    runs = store.runs()
    assert [(r.trigger, r.period_start, r.period_end) for r in runs] == [(SCHEDULE, day(2), day(3))]


def test_a_first_period_that_failed_is_retried_not_skipped(
    service: DecisionService, settings: Settings
) -> None:
    runner = service.monitoring
    assert runner is not None
    watch = settings.project_dir / "monitoring" / "watch.yaml"
    good = watch.read_text()
    watch.write_text("name: watch\nrules:\n  - {id: oops, when: amount >>> 3}\n")
    with pytest.raises(DefinitionError):
        runner.run_due()  # the first period, 06-02, fails
    later = transaction("t6", occurred_at="2026-06-05T10:00:00+00:00", amount=10.0)
    service.handle_sync([later], "stream")
    watch.write_text(good)
    retried = runner.run_due()
    assert retried is not None
    assert (retried.period_start, retried.period_end) == (day(2), day(5))
    assert retried.alerts == 1  # t5 on 06-03, which a retry from 06-04 would have missed


def test_without_every_monitoring_is_on_demand_only(settings: Settings) -> None:
    (settings.project_dir / "cases.yaml").write_text("default_queue: fraud\n")
    svc = open_service(settings)
    try:
        assert svc.monitoring is not None
        start_monitoring(svc)
        assert not svc.monitoring._thread.is_alive()
        assert svc.monitoring.due() is None
    finally:
        svc.close()


def test_monitoring_over_http(settings: Settings) -> None:
    service = open_service(settings)
    service.handle_sync(EVENTS, "stream")
    with TestClient(create_app(service, settings)) as client:  # closes the service on exit
        period = {"from": "2026-06-01T00:00:00+00:00", "to": "2026-06-02T00:00:00Z"}
        ran = client.post("/v1/monitoring/runs", json=period)
        assert ran.status_code == 201, ran.text
        body = ran.json()
        assert (body["trigger"], body["events"], body["alerts"], body["cases_opened"]) == (
            "api",
            3,
            3,
            2,
        )
        again = client.post("/v1/monitoring/runs", json=period).json()
        assert again["alerts"] == 0  # never twice
        listed = client.get("/v1/monitoring/runs", params={"trigger": "api"}).json()["runs"]
        assert [r["id"] for r in listed] == [again["id"], body["id"]]
        assert client.get("/v1/monitoring/runs", params={"trigger": SCHEDULE}).json() == {
            "runs": []
        }
        bad = client.post("/v1/monitoring/runs", json={"from": "2026-06-01", "to": "soon"})
        assert bad.status_code == 422
        assert [p["where"] for p in bad.json()["error"]["problems"]] == ["body.from", "body.to"]
        reversed_period = {"from": period["to"], "to": period["from"]}
        assert client.post("/v1/monitoring/runs", json=reversed_period).status_code == 422
        unknown = client.post("/v1/monitoring/runs", json={**period, "rules": "x"})
        assert unknown.status_code == 422
        far = {"from": "0001-01-01T00:00:00+05:00", "to": "9999-12-31T23:00:00-05:00"}
        out_of_range = client.post("/v1/monitoring/runs", json=far)
        assert out_of_range.status_code == 422
        problems = out_of_range.json()["error"]["problems"]
        assert [p["where"] for p in problems] == ["body.from", "body.to"]
        local = {"from": "2026-06-03T02:00:00+02:00", "to": "2026-06-04T02:00:00+02:00"}
        shown = client.post("/v1/monitoring/runs", json=local).json()
        assert (shown["period_start"], shown["period_end"]) == (
            "2026-06-03T00:00:00+00:00",
            "2026-06-04T00:00:00+00:00",
        )
        assert client.get("/v1/monitoring/runs").status_code == 200


def test_without_a_duckdb_source_monitoring_is_not_found(project_dir: Path, tmp_path: Path) -> None:
    settings = make_settings(project_dir, tmp_path / "mem", source={"type": "memory"})
    service = open_service(settings)
    assert service.monitoring is None
    with TestClient(create_app(service, settings)) as client:
        period = {"from": "2026-06-01T00:00:00Z", "to": "2026-06-02T00:00:00Z"}
        answer = client.post("/v1/monitoring/runs", json=period)
        assert answer.status_code == 404
        assert answer.json()["error"]["problems"][0]["where"] == "source"


def test_validate_checks_cases_yaml_and_monitoring_rules_at_once(project_dir: Path) -> None:
    ok = cli("validate", project_dir)
    assert ok.exit_code == 0, ok.output
    assert "1 monitoring rules" in plain(ok.output)  # the example's monitoring/post_event.yaml
    (project_dir / "cases.yaml").write_text("monitoring: {every: 0s}\n")
    (project_dir / "monitoring" / "bad.yaml").write_text(
        "name: bad\nrules:\n  - {id: oops, when: amount >>> 3}\n"
    )
    result = cli("validate", project_dir)
    assert result.exit_code == 2
    output = plain(result.output)
    assert "cases.yaml:1" in output
    assert "longer than 0s" in output
    assert "bad.yaml:3" in output


def test_the_cli_records_its_runs_failed_ones_included(settings: Settings) -> None:
    svc = open_service(settings)
    svc.handle_sync(EVENTS, "stream")
    svc.close()
    where = ["--project", settings.project_dir, "--data-dir", settings.data_dir]
    period = ["--from", "2026-06-01", "--to", "2026-06-01"]
    assert cli("monitor", *period, *where).exit_code == 0
    bad = settings.project_dir / "bad.yaml"
    bad.write_text("name: bad\nrules:\n  - {id: oops, when: amount >>> 3}\n")
    assert cli("monitor", *period, "--rules", bad, *where).exit_code == 2
    svc = open_service(settings)
    try:
        assert svc.alerts is not None
        runs = svc.alerts.cases.store.runs(trigger="cli")
    finally:
        svc.close()
    assert [(r.error is None, r.alerts) for r in runs] == [(False, 0), (True, 3)]
    assert runs[0].error is not None
    assert "DefinitionError" in runs[0].error
