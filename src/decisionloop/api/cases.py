"""HTTP routes for cases: list and filter, one case with its story, assign, comment, move, dispose.

Thin over :mod:`decisionloop.cases`: bodies and query values are checked here and in the case
service (every problem with its field path, in the API's one error shape); store calls run in a
worker thread and are committed before the answer. 404: no such case; 409: a change the case's
status refuses (``DL350``); 422: bad input.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import Field

from decisionloop.api.app import JSONResponse
from decisionloop.api.entities import StrictBody, bounded_int, parse_body
from decisionloop.cases.disposition import dispose
from decisionloop.cases.schedule import MonitorSchedule
from decisionloop.cases.service import CaseService
from decisionloop.cases.store import CaseFilter
from decisionloop.engine.service import DecisionService
from decisionloop.errors import InputError, NotFoundError, Problem, StorageError


class AssignBody(StrictBody):
    assignee: str | None
    author: str


class CommentBody(StrictBody):
    author: str
    text: str


class StatusBody(StrictBody):
    status: str
    author: str
    reason: str = ""


EARLIEST = datetime(1900, 1, 1, tzinfo=UTC)
LATEST = datetime(9000, 1, 1, tzinfo=UTC)


class MonitorBody(StrictBody):
    start: str = Field(alias="from")
    end: str = Field(alias="to")


def instants_of(texts: dict[str, str]) -> list[datetime]:
    """ISO-8601 times with a timezone (event time is UTC; a local time would be a guess), in UTC,
    between the years 1900 and 9000; or one error naming every one that is not."""
    found, problems = [], []
    for where, text in texts.items():
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            problems.append(Problem(where, f"not an ISO-8601 time: {text!r}"))
            continue
        if moment.tzinfo is None:
            problems.append(Problem(where, f"no timezone in {text!r}"))
            continue
        try:
            moment = moment.astimezone(UTC)
        except OverflowError:
            moment = EARLIEST - timedelta(days=1)  # reported as out of range below
        if not EARLIEST <= moment <= LATEST:
            problems.append(Problem(where, f"{text!r} is outside the years 1900-9000"))
        found.append(moment)
    if problems:
        raise InputError("invalid time", problems)
    return found


class DispositionBody(StrictBody):
    disposition: str
    author: str
    reason: str


def case_id_of(text: str) -> int:
    if text.isdigit() and 0 < int(text) < 2**63:
        return int(text)
    raise InputError("invalid case id", [Problem("path.case_id", f"not a case number: {text!r}")])


def cases_router(service: DecisionService) -> APIRouter:
    router = APIRouter(tags=["cases"])

    def cases() -> CaseService:
        if service.alerts is None:
            raise StorageError("no case store", [Problem("case_store", "not opened")])
        return service.alerts.cases

    def now() -> datetime:
        return datetime.now(UTC)

    @router.get("/v1/cases")
    async def list_cases(
        status: str | None = None,
        queue: str | None = None,
        assignee: str | None = None,
        entity_type: str | None = None,
        entity_id: str | None = None,
        limit: str = "100",
    ) -> Response:
        """Cases, most pressing first (by SLA due time); filter by status, queue, assignee and
        entity (``entity_type``, ``entity_id``); ``limit`` 1-1000."""
        where = CaseFilter(
            status,
            queue,
            assignee,
            entity_type,
            entity_id,
            bounded_int(limit, "query.limit", 1, 1000),
        )
        found = await asyncio.to_thread(cases().list, where)
        moment = now()
        return JSONResponse({"cases": [c.as_dict(moment) for c in found]})

    @router.get("/v1/cases/{case_id}")
    async def get_case(case_id: str) -> Response:
        """One case with its alerts, comments and audit trail (oldest first)."""
        view = await asyncio.to_thread(cases().view, case_id_of(case_id))
        return JSONResponse(view.as_dict(now()))

    @router.post("/v1/cases/{case_id}/assign")
    async def assign(case_id: str, request: Request) -> Response:
        """Assign (``{"assignee", "author"}``; ``assignee: null`` hands it back to the queue)."""
        number = case_id_of(case_id)
        body = await parse_body(request, AssignBody)
        case = await asyncio.to_thread(cases().assign, number, body.assignee, body.author)
        return JSONResponse(case.as_dict(now()))

    @router.post("/v1/cases/{case_id}/comments", status_code=201)
    async def comment(case_id: str, request: Request) -> Response:
        """Add a comment (``{"author", "text"}``)."""
        number = case_id_of(case_id)
        body = await parse_body(request, CommentBody)
        added = await asyncio.to_thread(cases().comment, number, body.author, body.text)
        return JSONResponse(added.as_dict(), status_code=201)

    @router.post("/v1/cases/{case_id}/status")
    async def change_status(case_id: str, request: Request) -> Response:
        """Move between ``open`` and ``investigating`` (``{"status", "author", "reason"}``)."""
        number = case_id_of(case_id)
        body = await parse_body(request, StatusBody)
        case = await asyncio.to_thread(
            cases().set_status, number, body.status, body.author, body.reason
        )
        return JSONResponse(case.as_dict(now()))

    @router.post("/v1/cases/{case_id}/disposition")
    async def dispose_case(case_id: str, request: Request) -> Response:
        """Close an investigated case with ``{"disposition": "fraud|not_fraud|inconclusive",
        "author", "reason"}``; writes the event and entity labels (docs/cases.md)."""
        number = case_id_of(case_id)
        body = await parse_body(request, DispositionBody)
        done = await dispose(service, cases(), number, body.disposition, body.author, body.reason)
        return JSONResponse(done.as_dict(now()))

    def monitoring() -> MonitorSchedule:
        if service.monitoring is None:
            problem = Problem("source", "post-event monitoring reads the DuckDB source layer")
            raise NotFoundError("this service has no post-event monitoring", [problem])
        return service.monitoring

    @router.get("/v1/monitoring/runs", tags=["monitoring"])
    async def monitoring_runs(trigger: str | None = None, limit: str = "50") -> Response:
        """Post-event monitoring runs, newest first: period, events, alerts, cases opened and
        the error of a failed run; filter by ``trigger`` (``schedule``, ``api``, ``cli``)."""
        count = bounded_int(limit, "query.limit", 1, 1000)
        found = await asyncio.to_thread(cases().store.runs, trigger, count)
        return JSONResponse({"runs": [run.as_dict() for run in found]})

    @router.post("/v1/monitoring/runs", status_code=201, tags=["monitoring"])
    async def run_monitoring(request: Request) -> Response:
        """Run the project's monitoring rule sets now over ``{"from", "to"}`` (ISO times with
        a timezone; event time, ``to`` excluded): hits open alerts and cases, never twice."""
        body = await parse_body(request, MonitorBody)
        runner = monitoring()
        start, end = instants_of({"body.from": body.start, "body.to": body.end})
        if start >= end:
            raise InputError("empty period", [Problem("body.to", "must be after body.from")])
        done = await asyncio.to_thread(runner.run, start, end, "api")
        return JSONResponse(done.as_dict(), status_code=201)

    return router
