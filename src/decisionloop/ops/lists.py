"""Managed block/allow lists as the API and the CLI use them: checked input, store, then index.

Same order as labels (:mod:`decisionloop.ops.labels`): the store commits first, the in-memory
index the rules read (``in_list``) follows on the thread that decides.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from decisionloop.errors import InputError, Problem
from decisionloop.ops.index import LookupIndex
from decisionloop.ops.labels import check_name, check_text
from decisionloop.ops.store import AuditEntry, ListItem, ManagedList, OpsStore

MAX_VALUE = 512


class ListService:
    def __init__(self, store: OpsStore, index: LookupIndex) -> None:
        self.store = store
        self.index = index

    def create(self, name: str, kind: str, description: str, author: str) -> ManagedList:
        problems = check_name(name, "body.name", "name")
        problems += check_name(kind, "body.kind", "kind")
        problems += check_text(author, "body.author", "author")
        if problems:
            raise InputError("invalid list", problems)
        return self.store.create_list(
            name, kind=kind, description=description, author=author, at=datetime.now(UTC)
        )

    async def create_async(
        self, name: str, kind: str, description: str, author: str
    ) -> ManagedList:
        return await asyncio.to_thread(self.create, name, kind, description, author)

    def lists(self) -> list[ManagedList]:
        return self.store.lists()

    def items(self, name: str, history: bool = False) -> list[ListItem]:
        """Items on the list now (or every item ever, with ``history``), oldest first."""
        self.store.get_list(name)
        items = self.store.items(name)
        if history:
            return items
        now = datetime.now(UTC)
        return [item for item in items if item.in_force(now)]

    def _store_add(self, name: str, value: str, author: str, reason: str) -> ListItem:
        problems = []
        if not value or len(value) > MAX_VALUE:
            problems.append(Problem("body.value", f"must be 1-{MAX_VALUE} characters"))
        problems += check_text(author, "body.author", "author")
        problems += check_text(reason, "body.reason", "reason")
        if problems:
            raise InputError("invalid list item", problems)
        return self.store.add_item(name, value, author=author, reason=reason, at=datetime.now(UTC))

    def add(self, name: str, value: str, author: str, reason: str) -> ListItem:
        item = self._store_add(name, value, author, reason)
        self.index.apply_items([item])
        return item

    async def add_async(self, name: str, value: str, author: str, reason: str) -> ListItem:
        item = await asyncio.to_thread(self._store_add, name, value, author, reason)
        self.index.apply_items([item])
        return item

    def _store_remove(self, name: str, value: str, author: str, reason: str) -> list[ListItem]:
        problems = check_text(author, "query.author", "author")
        problems += check_text(reason, "query.reason", "reason")
        if problems:
            raise InputError("invalid removal", problems)
        return self.store.remove_item(
            name, value, author=author, reason=reason, at=datetime.now(UTC)
        )

    def remove(self, name: str, value: str, author: str, reason: str) -> list[ListItem]:
        removed = self._store_remove(name, value, author, reason)
        self.index.apply_items(removed)
        return removed

    async def remove_async(self, name: str, value: str, author: str, reason: str) -> list[ListItem]:
        removed = await asyncio.to_thread(self._store_remove, name, value, author, reason)
        self.index.apply_items(removed)
        return removed

    def audit(self, name: str, limit: int = 100) -> list[AuditEntry]:
        self.store.get_list(name)
        return self.store.audit(name, limit)
