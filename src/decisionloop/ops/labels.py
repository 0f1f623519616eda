"""Risk labels as the API and the CLI use them: checked input, the store, then the index.

A write goes to the store first (committed, durable) and only then into the in-memory index the
rules read, so that a label a rule has seen is never lost by a crash. The async forms run the
store call in a worker thread and update the index on the event loop, the thread that decides.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from decisionloop.errors import InputError, NotFoundError, Problem
from decisionloop.ops.index import LookupIndex
from decisionloop.ops.store import LABEL_SOURCES, AuditEntry, Label, OpsStore, label_subject
from decisionloop.project.definitions import window_seconds

NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:-]{0,127}$")
MAX_ID = 256
MAX_TEXT = 2000


@dataclass(frozen=True)
class NewLabel:
    label: str
    reason: str
    author: str
    source: str = "api"
    source_ref: str | None = None
    ttl: str | None = None  # 30m, 12h, 7d ...


def check_name(value: str, where: str, what: str) -> list[Problem]:
    if NAME_RE.match(value):
        return []
    return [Problem(where, f"{what} must be 1-128 letters, digits or _ . : - (got {value!r})")]


def check_text(value: str, where: str, what: str) -> list[Problem]:
    if not value.strip():
        return [Problem(where, f"{what} must not be empty")]
    if len(value) > MAX_TEXT:
        return [Problem(where, f"{what} is longer than {MAX_TEXT} characters")]
    return []


def check_entity(entity_type: str, entity_id: str, known: Collection[str]) -> None:
    """404 for an entity type the project does not declare; 422 for an unusable id."""
    if entity_type not in known:
        raise NotFoundError(
            "unknown entity type",
            [
                Problem(
                    "path.type",
                    f"no entity {entity_type!r}; declared: {', '.join(sorted(known)) or 'none'}",
                )
            ],
        )
    if not entity_id or len(entity_id) > MAX_ID:
        raise InputError(
            "invalid entity id", [Problem("path.id", f"must be 1-{MAX_ID} characters")]
        )


class LabelService:
    def __init__(self, store: OpsStore, index: LookupIndex, entity_types: Collection[str]):
        self.store = store
        self.index = index
        self.entity_types = frozenset(entity_types)

    def _check_new(self, new: NewLabel) -> timedelta | None:
        problems = check_name(new.label, "body.label", "label")
        problems += check_text(new.reason, "body.reason", "reason")
        problems += check_text(new.author, "body.author", "author")
        if new.source not in LABEL_SOURCES:
            problems.append(Problem("body.source", f"must be one of {', '.join(LABEL_SOURCES)}"))
        ttl = None
        if new.ttl is not None:
            try:
                ttl = timedelta(seconds=window_seconds(new.ttl))
            except ValueError:
                problems.append(Problem("body.ttl", f"{new.ttl!r}: expected 30m, 12h, 7d ..."))
            else:
                if not ttl:
                    problems.append(Problem("body.ttl", "must be longer than zero"))
        if problems:
            raise InputError("invalid label", problems)
        return ttl

    def add(self, entity_type: str, entity_id: str, new: NewLabel) -> Label:
        """Blocking: store (committed) then index. Call on the thread that owns the index."""
        label = self._store_add(entity_type, entity_id, new)
        self.index.apply_labels([label])
        return label

    async def add_async(self, entity_type: str, entity_id: str, new: NewLabel) -> Label:
        label = await asyncio.to_thread(self._store_add, entity_type, entity_id, new)
        self.index.apply_labels([label])
        return label

    def _store_add(self, entity_type: str, entity_id: str, new: NewLabel) -> Label:
        check_entity(entity_type, entity_id, self.entity_types)
        ttl = self._check_new(new)
        now = datetime.now(UTC)
        return self.store.add_label(
            entity_type,
            entity_id,
            new.label,
            reason=new.reason,
            source=new.source,
            source_ref=new.source_ref,
            author=new.author,
            at=now,
            expires_at=now + ttl if ttl else None,
        )

    def remove(
        self, entity_type: str, entity_id: str, label: str, author: str, reason: str
    ) -> list[Label]:
        removed = self._store_remove(entity_type, entity_id, label, author, reason)
        self.index.apply_labels(removed)
        return removed

    async def remove_async(
        self, entity_type: str, entity_id: str, label: str, author: str, reason: str
    ) -> list[Label]:
        removed = await asyncio.to_thread(
            self._store_remove, entity_type, entity_id, label, author, reason
        )
        self.index.apply_labels(removed)
        return removed

    def _store_remove(
        self, entity_type: str, entity_id: str, label: str, author: str, reason: str
    ) -> list[Label]:
        check_entity(entity_type, entity_id, self.entity_types)
        problems = check_text(author, "query.author", "author")
        problems += check_text(reason, "query.reason", "reason")
        if problems:
            raise InputError("invalid removal", problems)
        return self.store.remove_label(
            entity_type, entity_id, label, author=author, reason=reason, at=datetime.now(UTC)
        )

    def of(self, entity_type: str, entity_id: str, history: bool = False) -> list[Label]:
        """Labels in force now (or every label ever, with ``history``), oldest first."""
        check_entity(entity_type, entity_id, self.entity_types)
        labels = self.store.labels(entity_type, entity_id)
        if history:
            return labels
        now = datetime.now(UTC)
        return [label for label in labels if label.in_force(now)]

    def audit(self, entity_type: str, entity_id: str, limit: int = 100) -> list[AuditEntry]:
        return self.store.audit(label_subject(entity_type, entity_id), limit)
