"""A disposition closes a case and writes what it learnt as labels, where the loop reads them.

``fraud`` and ``not_fraud`` write (names from ``cases.yaml`` ``labels``); ``inconclusive`` writes
none. Two kinds:

* **Event labels**: one ``label`` event per alerted event (``refers_to_event_id`` and, where the
  project's ``label`` type declares them, ``entity_type: event``/``entity_id``, ``source:
  case:<id>``), appended to the source layer through the decision service like any stored event.
  So label-aware features (``labelled_count``/``labelled_share``) count it from its arrival on,
  the backtest's precision and recall count it, and so does the next training set.
* **An entity label** on the case's entity in the operational store (``source: case``,
  ``source_ref: case:<id>``, the reason, ``label_ttl``), which ``has_label`` reads at once.

Order: labels first, then the case is closed, so that a failure midway leaves the case open and
the disposition can be sent again: event labels have ids derived from the case and the event (a
repeat is a duplicate, not a second label) and an entity label from the same case is not added
twice.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from decisionloop.cases.service import CaseService
from decisionloop.cases.store import Case
from decisionloop.features.semantics import LABEL_EVENT
from decisionloop.ops.labels import LabelService, NewLabel

if TYPE_CHECKING:
    from decisionloop.engine.service import DecisionService


@dataclass(frozen=True)
class Disposed:
    case: Case
    event_labels: list[str]  # ids of the label events stored (repeats included)
    entity_label: int | None  # id of the entity label in the operational store

    def as_dict(self, now: datetime) -> dict[str, Any]:
        return {
            **self.case.as_dict(now),
            "event_labels": self.event_labels,
            "entity_label": self.entity_label,
        }


def label_event_id(case_id: int, event_id: str) -> str:
    """Stable per (case, event), so that a repeated disposition stores no second label."""
    digest = hashlib.sha256(event_id.encode()).hexdigest()[:20]
    return f"case-{case_id}-label-{digest}"


def label_events(
    decisions: DecisionService, case: Case, event_ids: list[str], label: str, at: datetime
) -> list[dict[str, Any]]:
    """The label events for the alerted events, shaped by the project's ``label`` type (only
    the fields it declares). None when the project declares no way to name an event."""
    declared = decisions.engine.catalog.types.get(LABEL_EVENT)
    if declared is None:
        return []
    fields = declared.fields
    kind = fields.get("entity_type")
    names_events = kind is not None and (kind.type != "enum" or "event" in (kind.values or ()))
    if "refers_to_event_id" not in fields and not (names_events and "entity_id" in fields):
        return []
    events = []
    for event_id in dict.fromkeys(event_ids):  # an event alerted by two rules: one label
        payload: dict[str, Any] = {
            "event_id": label_event_id(case.id, event_id),
            "type": LABEL_EVENT,
            "occurred_at": at.isoformat(),  # when the bank learnt it
            "label": label,
        }
        if "refers_to_event_id" in fields:
            payload["refers_to_event_id"] = event_id
        if names_events and "entity_id" in fields:
            payload.update(entity_type="event", entity_id=event_id)
        if "source" in fields:
            payload["source"] = f"case:{case.id}"
        events.append(payload)
    return events


async def dispose(
    decisions: DecisionService,
    cases: CaseService,
    case_id: int,
    disposition: str,
    author: str,
    reason: str,
) -> Disposed:
    """Check, write both label kinds, then close the case (see the module docstring)."""
    case = await asyncio.to_thread(cases.check_disposition, case_id, disposition, author, reason)
    label = cases.config.label_for(disposition)
    event_labels: list[str] = []
    entity_label: int | None = None
    if label is not None:
        alerts = await asyncio.to_thread(cases.store.alerts, case_id)
        now = datetime.now(UTC)
        objs = label_events(decisions, case, [a.new.event_id for a in alerts], label, now)
        if objs:
            await decisions.handle(objs, "ingest")
            event_labels = [o["event_id"] for o in objs]
        entity_label = await _label_entity(decisions, cases, case, label, author, reason)
    written = {"event_labels": event_labels, "entity_label": entity_label}
    closed = await asyncio.to_thread(cases.close, case_id, disposition, author, reason, written)
    return Disposed(closed, event_labels, entity_label)


async def _label_entity(
    decisions: DecisionService,
    cases: CaseService,
    case: Case,
    label: str,
    author: str,
    reason: str,
) -> int | None:
    ops = decisions.ops
    entity_types = {e for t in decisions.engine.catalog.types.values() for e in t.entity_keys}
    if ops is None or case.entity_type not in entity_types:
        return None  # a case about an event alone has no entity to label
    ref = f"case:{case.id}"
    existing = await asyncio.to_thread(ops.labels, case.entity_type, case.entity_id)
    for earlier in existing:
        if earlier.source_ref == ref and earlier.label == label and earlier.removed is None:
            return earlier.id  # written by an earlier attempt at this disposition
    new = NewLabel(
        label,
        reason=f"case {case.id} disposed {label}: {reason}",
        author=author,
        source="case",
        source_ref=ref,
        ttl=cases.config.label_ttl,
    )
    service = LabelService(ops, decisions.engine.lookups, entity_types)
    stored = await service.add_async(case.entity_type, case.entity_id, new)
    return stored.id
