"""Cases as the API and the CLI use them: checked input, the life cycle, then the store.

Life cycle: ``open`` (alerts joined it, nobody works it yet) → ``investigating`` → ``closed``.
An investigation can go back to ``open`` (handed back to the queue); a case is closed only by a
disposition (:mod:`decisionloop.cases.disposition`), which needs an investigation first; a closed
case changes no more (a new alert about its entity opens a new case). Any other move is refused
with :class:`CaseTransitionError` (409) naming the allowed ones. Every change is audited with who,
when and what, in the same transaction as the change.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from decisionloop.cases.config import DISPOSITIONS, CasesConfig
from decisionloop.cases.store import (
    Alert,
    Case,
    CaseAudit,
    CaseFilter,
    Comment,
    NewAlert,
    Opened,
    SqlCaseStore,
)
from decisionloop.errors import CaseTransitionError, InputError, Problem
from decisionloop.ops.labels import check_text
from decisionloop.ops.store import to_us

STATUSES = ("open", "investigating", "closed")
# Moves the status endpoint makes; investigating -> closed is the disposition's alone.
MOVES: dict[str, tuple[str, ...]] = {"open": ("investigating",), "investigating": ("open",)}
MAX_NAME = 128


@dataclass(frozen=True)
class CaseView:
    """One case with everything an investigator reads: its alerts, comments and audit trail."""

    case: Case
    alerts: list[Alert]
    comments: list[Comment]
    audit: list[CaseAudit]

    def as_dict(self, now: datetime) -> dict[str, Any]:
        return {
            **self.case.as_dict(now),
            "alerts": [a.as_dict() for a in self.alerts],
            "comments": [c.as_dict() for c in self.comments],
            "audit": [e.as_dict() for e in self.audit],
        }


def _check_person(value: str, where: str, what: str) -> list[Problem]:
    if len(value) > MAX_NAME:
        return [Problem(where, f"{what} is longer than {MAX_NAME} characters")]
    return check_text(value, where, what)


def _refused(case: Case, wanted: str) -> CaseTransitionError:
    allowed = MOVES.get(case.status, ())
    if case.status == "investigating":
        allowed = (*allowed, "closed (by a disposition)")
    hint = f"allowed: {', '.join(allowed)}" if allowed else "a closed case does not change"
    return CaseTransitionError(
        f"case {case.id} is {case.status}",
        [Problem("body.status", f"cannot go from {case.status} to {wanted}; {hint}")],
    )


class CaseService:
    def __init__(self, store: SqlCaseStore, config: CasesConfig) -> None:
        self.store = store
        self.config = config

    # -- alerts -------------------------------------------------------------------------------
    def open_alerts(self, alerts: Sequence[NewAlert], at: datetime | None = None) -> Opened:
        return self.store.open_alerts(alerts, at or datetime.now(UTC), self.config.sla_for)

    # -- reads --------------------------------------------------------------------------------
    def list(self, where: CaseFilter) -> list[Case]:
        if where.status is not None and where.status not in STATUSES:
            raise InputError(
                "invalid query value",
                [Problem("query.status", f"{where.status!r} is not one of {', '.join(STATUSES)}")],
            )
        return self.store.cases(where)

    def view(self, case_id: int) -> CaseView:
        case = self.store.case(case_id)
        return CaseView(
            case,
            self.store.alerts(case_id),
            self.store.comments(case_id),
            self.store.audit(case_id),
        )

    # -- changes ------------------------------------------------------------------------------
    def assign(self, case_id: int, assignee: str | None, author: str) -> Case:
        """Give the case to someone (``None``: back to the queue). A closed case is refused."""
        problems = _check_person(author, "body.author", "author")
        if assignee is not None:
            problems += _check_person(assignee, "body.assignee", "assignee")
        if problems:
            raise InputError("invalid assignment", problems)

        def apply(case: Case) -> tuple[dict[str, Any], dict[str, Any]]:
            if case.status == "closed":
                raise CaseTransitionError(
                    f"case {case.id} is closed",
                    [Problem("body.assignee", "a closed case cannot be assigned")],
                )
            return {"assignee": assignee}, {"from": case.assignee, "to": assignee}

        return self.store.change(case_id, author, "case.assign", datetime.now(UTC), apply)

    def comment(self, case_id: int, author: str, text: str) -> Comment:
        problems = _check_person(author, "body.author", "author")
        problems += check_text(text, "body.text", "text")
        if problems:
            raise InputError("invalid comment", problems)
        return self.store.add_comment(case_id, author, text, datetime.now(UTC))

    def set_status(self, case_id: int, status: str, author: str, reason: str = "") -> Case:
        """``open`` <-> ``investigating``; closing takes a disposition (see :meth:`close`)."""
        problems = _check_person(author, "body.author", "author")
        if status not in STATUSES:
            problems.append(
                Problem("body.status", f"{status!r} is not one of {', '.join(STATUSES)}")
            )
        if problems:
            raise InputError("invalid status change", problems)

        def apply(case: Case) -> tuple[dict[str, Any], dict[str, Any]]:
            if status not in MOVES.get(case.status, ()):
                raise _refused(case, status)
            detail: dict[str, Any] = {"from": case.status, "to": status}
            if reason:
                detail["reason"] = reason
            return {"status": status}, detail

        return self.store.change(case_id, author, "case.status", datetime.now(UTC), apply)

    def check_disposition(self, case_id: int, disposition: str, author: str, reason: str) -> Case:
        """The case, if it may be disposed of now with these values (nothing is written)."""
        problems = _check_person(author, "body.author", "author")
        problems += check_text(reason, "body.reason", "reason")
        if disposition not in DISPOSITIONS:
            problems.append(
                Problem(
                    "body.disposition",
                    f"{disposition!r} is not one of {', '.join(DISPOSITIONS)}",
                )
            )
        if problems:
            raise InputError("invalid disposition", problems)
        case = self.store.case(case_id)
        if case.status != "investigating":
            raise _refused(case, "closed")
        return case

    def close(
        self,
        case_id: int,
        disposition: str,
        author: str,
        reason: str,
        written: dict[str, Any],
    ) -> Case:
        """Record the disposition and close; ``written``: the labels it wrote, for the audit."""
        self.check_disposition(case_id, disposition, author, reason)
        now = datetime.now(UTC)

        def apply(case: Case) -> tuple[dict[str, Any], dict[str, Any]]:
            if case.status != "investigating":  # changed since the check: refuse, not overwrite
                raise _refused(case, "closed")
            values = {
                "status": "closed",
                "disposition": disposition,
                "disposition_reason": reason,
                "closed_by": author,
                "closed_us": to_us(now),
            }
            detail = {"disposition": disposition, "reason": reason, **written}
            return values, detail

        return self.store.change(case_id, author, "case.dispose", now, apply)
