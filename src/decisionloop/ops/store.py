"""The operational store: risk labels and managed lists, with their full history and an audit trail.

One port (:class:`OpsStore`) and one adapter (:class:`SqlOpsStore`, SQLAlchemy Core) that runs
on a SQLite file under the service's ``data_dir`` by default, in memory for tests (``sqlite://``)
and on PostgreSQL when ``ops_store_url`` names it. Nothing is ever deleted: removing a label or a
list item stamps who removed it, when and why, so that backtests can ask what was known at any
past moment, and every change also writes an audit row in the same transaction.

Times are stored as integer microseconds since the epoch (UTC): exact, ordered, and the same on
every database, where timezone-aware column types are not.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.pool import StaticPool

from decisionloop.errors import InputError, NotFoundError, Problem, StorageError

LABEL_SOURCES = ("rule", "model", "analyst", "api", "case")  # case: a disposition

metadata = sa.MetaData()
labels_table = sa.Table(
    "risk_labels",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("entity_type", sa.String(64), nullable=False),
    sa.Column("entity_id", sa.String(256), nullable=False),
    sa.Column("label", sa.String(128), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("source", sa.String(32), nullable=False),
    sa.Column("source_ref", sa.String(256)),  # rule id, model name ...
    sa.Column("author", sa.String(128), nullable=False),
    sa.Column("created_us", sa.BigInteger, nullable=False),
    sa.Column("expires_us", sa.BigInteger),
    sa.Column("removed_us", sa.BigInteger),
    sa.Column("removed_by", sa.String(128)),
    sa.Column("removal_reason", sa.Text),
    sa.Index("ix_risk_labels_entity", "entity_type", "entity_id"),
)
lists_table = sa.Table(
    "managed_lists",
    metadata,
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("description", sa.Text, nullable=False),
    sa.Column("author", sa.String(128), nullable=False),
    sa.Column("created_us", sa.BigInteger, nullable=False),
)
items_table = sa.Table(
    "list_items",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("list_name", sa.String(128), sa.ForeignKey("managed_lists.name"), nullable=False),
    sa.Column("value", sa.String(512), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("author", sa.String(128), nullable=False),
    sa.Column("created_us", sa.BigInteger, nullable=False),
    sa.Column("removed_us", sa.BigInteger),
    sa.Column("removed_by", sa.String(128)),
    sa.Column("removal_reason", sa.Text),
    sa.Index("ix_list_items_value", "list_name", "value"),
)
audit_table = sa.Table(
    "ops_audit",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at_us", sa.BigInteger, nullable=False),
    sa.Column("actor", sa.String(128), nullable=False),
    sa.Column("action", sa.String(32), nullable=False),
    sa.Column("subject", sa.String(512), nullable=False),
    sa.Column("detail", sa.Text, nullable=False),
    sa.Index("ix_ops_audit_subject", "subject"),
)


def to_us(moment: datetime) -> int:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH) // timedelta(microseconds=1)


def from_us(micros: int | None) -> datetime | None:
    return None if micros is None else _EPOCH + timedelta(microseconds=micros)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


@dataclass(frozen=True)
class Removal:
    by: str
    at: datetime
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {"by": self.by, "at": _iso(self.at), "reason": self.reason}


@dataclass(frozen=True)
class Label:
    """A risk label on one entity; in force from ``created_at`` until removed or expired."""

    id: int
    entity_type: str
    entity_id: str
    label: str
    reason: str
    source: str
    source_ref: str | None
    author: str
    created_at: datetime
    expires_at: datetime | None = None
    removed: Removal | None = None

    @property
    def ends_at(self) -> datetime | None:
        """When the label stops being in force (the earlier of removal and expiry)."""
        ends = [m for m in (self.expires_at, self.removed.at if self.removed else None) if m]
        return min(ends, default=None)

    def in_force(self, at: datetime) -> bool:
        ends = self.ends_at
        return self.created_at <= at and (ends is None or at < ends)

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "entity_type": self.entity_type,
            "entity_id": self.entity_id,
            "label": self.label,
            "reason": self.reason,
            "source": self.source,
            "source_ref": self.source_ref,
            "author": self.author,
            "created_at": _iso(self.created_at),
            "expires_at": _iso(self.expires_at),
            "removed": None if self.removed is None else self.removed.as_dict(),
        }


@dataclass(frozen=True)
class ManagedList:
    name: str
    kind: str
    description: str
    author: str
    created_at: datetime

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "description": self.description,
            "author": self.author,
            "created_at": _iso(self.created_at),
        }


@dataclass(frozen=True)
class ListItem:
    id: int
    list_name: str
    value: str
    reason: str
    author: str
    created_at: datetime
    removed: Removal | None = None

    def in_force(self, at: datetime) -> bool:
        return self.created_at <= at and (self.removed is None or at < self.removed.at)

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "list": self.list_name,
            "value": self.value,
            "reason": self.reason,
            "author": self.author,
            "created_at": _iso(self.created_at),
            "removed": None if self.removed is None else self.removed.as_dict(),
        }


@dataclass(frozen=True)
class AuditEntry:
    id: int
    at: datetime
    actor: str
    action: str  # label.add | label.remove | list.create | item.add | item.remove
    subject: str  # "device/D1" for labels, the list name for lists and items
    detail: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "at": _iso(self.at),
            "actor": self.actor,
            "action": self.action,
            "subject": self.subject,
            "detail": self.detail,
        }


class OpsStore(Protocol):
    """Labels and lists with history; every write is durable (committed) when it returns."""

    def add_label(
        self,
        entity_type: str,
        entity_id: str,
        label: str,
        *,
        reason: str,
        source: str,
        author: str,
        at: datetime,
        expires_at: datetime | None = None,
        source_ref: str | None = None,
    ) -> Label: ...

    def remove_label(
        self,
        entity_type: str,
        entity_id: str,
        label: str,
        *,
        author: str,
        reason: str,
        at: datetime,
    ) -> list[Label]:
        """End every label of that name still recorded as active; NotFoundError if none is."""
        ...

    def labels(self, entity_type: str | None = None, entity_id: str | None = None) -> list[Label]:
        """Every label ever added (removed ones included), oldest first."""
        ...

    def create_list(
        self, name: str, *, kind: str, description: str, author: str, at: datetime
    ) -> ManagedList: ...

    def lists(self) -> list[ManagedList]: ...

    def get_list(self, name: str) -> ManagedList:
        """The list, or NotFoundError."""
        ...

    def add_item(
        self, list_name: str, value: str, *, author: str, reason: str, at: datetime
    ) -> ListItem: ...

    def remove_item(
        self, list_name: str, value: str, *, author: str, reason: str, at: datetime
    ) -> list[ListItem]: ...

    def items(self, list_name: str | None = None) -> list[ListItem]:
        """Every item ever added (removed ones included), oldest first."""
        ...

    def audit(self, subject: str | None = None, limit: int = 100) -> list[AuditEntry]:
        """The latest changes first."""
        ...

    def close(self) -> None: ...


def label_subject(entity_type: str, entity_id: str) -> str:
    return f"{entity_type}/{entity_id}"


class SqlOpsStore:
    """:class:`OpsStore` on any SQLAlchemy URL (SQLite by default, PostgreSQL when configured)."""

    def __init__(self, url: str) -> None:
        options: dict[str, Any] = {}
        if url in ("sqlite://", "sqlite:///:memory:"):
            # One shared connection: a new one would be a new, empty in-memory database.
            options = {"poolclass": StaticPool, "connect_args": {"check_same_thread": False}}
        try:
            self.engine = sa.create_engine(url, **options)
            if self.engine.dialect.name == "sqlite":
                sa.event.listen(self.engine, "connect", sqlite_pragmas)
            metadata.create_all(self.engine)
        except SQLAlchemyError as exc:
            raise StorageError(
                "cannot open the operational store", [Problem("ops_store_url", str(exc))]
            ) from exc

    @classmethod
    def at_path(cls, path: Path) -> SqlOpsStore:
        path.parent.mkdir(parents=True, exist_ok=True)
        return cls(f"sqlite:///{path}")

    # -- labels -------------------------------------------------------------------------------
    def add_label(
        self,
        entity_type: str,
        entity_id: str,
        label: str,
        *,
        reason: str,
        source: str,
        author: str,
        at: datetime,
        expires_at: datetime | None = None,
        source_ref: str | None = None,
    ) -> Label:
        row = {
            "entity_type": entity_type,
            "entity_id": entity_id,
            "label": label,
            "reason": reason,
            "source": source,
            "source_ref": source_ref,
            "author": author,
            "created_us": to_us(at),
            "expires_us": None if expires_at is None else to_us(expires_at),
        }
        with self._write() as conn:
            new_id = inserted_id(conn.execute(labels_table.insert().values(**row)))
            detail = {"id": new_id, "label": label, "reason": reason, "source": source}
            if expires_at is not None:
                detail["expires_at"] = expires_at.isoformat()
            self._audit(
                conn, at, author, "label.add", label_subject(entity_type, entity_id), detail
            )
            stored = conn.execute(labels_table.select().where(labels_table.c.id == new_id)).one()
        return _label(stored)

    def remove_label(
        self,
        entity_type: str,
        entity_id: str,
        label: str,
        *,
        author: str,
        reason: str,
        at: datetime,
    ) -> list[Label]:
        t = labels_table
        where = sa.and_(
            t.c.entity_type == entity_type,
            t.c.entity_id == entity_id,
            t.c.label == label,
            t.c.removed_us.is_(None),
        )
        with self._write() as conn:
            ids = [r.id for r in conn.execute(sa.select(t.c.id).where(where))]
            if not ids:
                raise NotFoundError(
                    "label not found",
                    [
                        Problem(
                            "path.label",
                            f"{entity_type} {entity_id!r} has no active label {label!r}",
                        )
                    ],
                )
            conn.execute(
                t.update()
                .where(t.c.id.in_(ids))
                .values(removed_us=to_us(at), removed_by=author, removal_reason=reason)
            )
            subject = label_subject(entity_type, entity_id)
            detail = {"ids": ids, "label": label, "reason": reason}
            self._audit(conn, at, author, "label.remove", subject, detail)
            rows = conn.execute(t.select().where(t.c.id.in_(ids)).order_by(t.c.id)).all()
        return [_label(r) for r in rows]

    def labels(self, entity_type: str | None = None, entity_id: str | None = None) -> list[Label]:
        t = labels_table
        query = t.select().order_by(t.c.id)
        if entity_type is not None:
            query = query.where(t.c.entity_type == entity_type)
        if entity_id is not None:
            query = query.where(t.c.entity_id == entity_id)
        with self._read() as conn:
            return [_label(r) for r in conn.execute(query)]

    # -- lists --------------------------------------------------------------------------------
    def create_list(
        self, name: str, *, kind: str, description: str, author: str, at: datetime
    ) -> ManagedList:
        row = {
            "name": name,
            "kind": kind,
            "description": description,
            "author": author,
            "created_us": to_us(at),
        }
        try:
            with self._write() as conn:
                conn.execute(lists_table.insert().values(**row))
                detail = {"kind": kind, "description": description}
                self._audit(conn, at, author, "list.create", name, detail)
        except IntegrityError as exc:
            raise InputError(
                "list already exists", [Problem("body.name", f"a list {name!r} already exists")]
            ) from exc
        return ManagedList(name, kind, description, author, at)

    def lists(self) -> list[ManagedList]:
        with self._read() as conn:
            rows = conn.execute(lists_table.select().order_by(lists_table.c.name))
            return [_list(r) for r in rows]

    def get_list(self, name: str) -> ManagedList:
        with self._read() as conn:
            row = conn.execute(lists_table.select().where(lists_table.c.name == name)).first()
        if row is None:
            raise NotFoundError("list not found", [Problem("path.name", f"no list {name!r}")])
        return _list(row)

    def add_item(
        self, list_name: str, value: str, *, author: str, reason: str, at: datetime
    ) -> ListItem:
        self.get_list(list_name)
        row = {
            "list_name": list_name,
            "value": value,
            "reason": reason,
            "author": author,
            "created_us": to_us(at),
        }
        with self._write() as conn:
            new_id = inserted_id(conn.execute(items_table.insert().values(**row)))
            detail = {"id": new_id, "value": value, "reason": reason}
            self._audit(conn, at, author, "item.add", list_name, detail)
        return ListItem(new_id, list_name, value, reason, author, at)

    def remove_item(
        self, list_name: str, value: str, *, author: str, reason: str, at: datetime
    ) -> list[ListItem]:
        self.get_list(list_name)
        t = items_table
        where = sa.and_(t.c.list_name == list_name, t.c.value == value, t.c.removed_us.is_(None))
        with self._write() as conn:
            ids = [r.id for r in conn.execute(sa.select(t.c.id).where(where))]
            if not ids:
                raise NotFoundError(
                    "list item not found",
                    [Problem("path.value", f"{value!r} is not on the list {list_name!r}")],
                )
            conn.execute(
                t.update()
                .where(t.c.id.in_(ids))
                .values(removed_us=to_us(at), removed_by=author, removal_reason=reason)
            )
            detail = {"ids": ids, "value": value, "reason": reason}
            self._audit(conn, at, author, "item.remove", list_name, detail)
            rows = conn.execute(t.select().where(t.c.id.in_(ids)).order_by(t.c.id)).all()
        return [_item(r) for r in rows]

    def items(self, list_name: str | None = None) -> list[ListItem]:
        t = items_table
        query = t.select().order_by(t.c.id)
        if list_name is not None:
            query = query.where(t.c.list_name == list_name)
        with self._read() as conn:
            return [_item(r) for r in conn.execute(query)]

    # -- audit --------------------------------------------------------------------------------
    def audit(self, subject: str | None = None, limit: int = 100) -> list[AuditEntry]:
        t = audit_table
        query = t.select().order_by(t.c.id.desc()).limit(limit)
        if subject is not None:
            query = query.where(t.c.subject == subject)
        with self._read() as conn:
            rows = conn.execute(query).all()
        return [
            AuditEntry(r.id, _at(r.at_us), r.actor, r.action, r.subject, json.loads(r.detail))
            for r in rows
        ]

    def close(self) -> None:
        self.engine.dispose()

    # -- plumbing -----------------------------------------------------------------------------
    def _audit(
        self,
        conn: sa.Connection,
        at: datetime,
        actor: str,
        action: str,
        subject: str,
        detail: dict[str, Any],
    ) -> None:
        row = {
            "at_us": to_us(at),
            "actor": actor,
            "action": action,
            "subject": subject,
            "detail": json.dumps(detail, sort_keys=True),
        }
        conn.execute(audit_table.insert().values(**row))

    def _write(self) -> Transaction:
        return Transaction(self.engine, write=True)

    def _read(self) -> Transaction:
        return Transaction(self.engine, write=False)


class Transaction:
    """``engine.begin()`` with database failures turned into :class:`StorageError` (503)."""

    def __init__(self, engine: sa.Engine, write: bool) -> None:
        self.engine = engine
        self.write = write
        self._context: Any = None

    def __enter__(self) -> sa.Connection:
        try:
            self._context = self.engine.begin() if self.write else self.engine.connect()
            connection: sa.Connection = self._context.__enter__()
        except SQLAlchemyError as exc:
            raise _storage_error(exc) from exc
        return connection

    def __exit__(self, kind: Any, value: Any, traceback: Any) -> None:
        try:
            self._context.__exit__(kind, value, traceback)
        except IntegrityError:
            raise
        except SQLAlchemyError as exc:
            raise _storage_error(exc) from exc
        if isinstance(value, SQLAlchemyError) and not isinstance(value, IntegrityError):
            raise _storage_error(value) from value


def _storage_error(exc: SQLAlchemyError) -> StorageError:
    return StorageError("the operational store failed", [Problem("ops_store", str(exc))])


def inserted_id(result: sa.CursorResult[Any]) -> int:
    key = result.inserted_primary_key
    assert key is not None
    return int(key[0])


def sqlite_pragmas(connection: Any, _record: Any) -> None:
    cursor = connection.cursor()
    # WAL: readers do not block the writer; FULL: a commit is on disk before the answer.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _at(micros: int) -> datetime:
    moment = from_us(micros)
    assert moment is not None
    return moment


def _removal(row: Any) -> Removal | None:
    if row.removed_us is None:
        return None
    return Removal(row.removed_by or "", _at(row.removed_us), row.removal_reason or "")


def _label(row: Any) -> Label:
    return Label(
        id=row.id,
        entity_type=row.entity_type,
        entity_id=row.entity_id,
        label=row.label,
        reason=row.reason,
        source=row.source,
        source_ref=row.source_ref,
        author=row.author,
        created_at=_at(row.created_us),
        expires_at=from_us(row.expires_us),
        removed=_removal(row),
    )


def _list(row: Any) -> ManagedList:
    return ManagedList(row.name, row.kind, row.description, row.author, _at(row.created_us))


def _item(row: Any) -> ListItem:
    return ListItem(
        row.id,
        row.list_name,
        row.value,
        row.reason,
        row.author,
        _at(row.created_us),
        _removal(row),
    )
