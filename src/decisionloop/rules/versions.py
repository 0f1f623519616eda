"""Ruleset versions: every change to a project's rules and strategies, kept with author and diff.

A *ruleset* is the bytes of the files the loader reads for rules and strategies
(``rules/*.yaml``, ``strategies/*.yaml``). Each recorded version keeps those files exactly, a
content hash, the author, the time, a message and a unified diff against the previous version.
Versions are numbered ``v1, v2, ...`` and form one line: a rollback to ``vN`` writes vN's files
back into the project folder and is recorded as a new version ("rollback to vN").

Storage is one SQLite file, ``<data_dir>/rules.sqlite`` (stdlib ``sqlite3``), rather than JSON
files, because SQLite gives what a history needs for free: a publish is one transaction (a crash
leaves no half-written version), two publishers at once get distinct numbers (``BEGIN
IMMEDIATE``), and triggers refuse any UPDATE or DELETE, so versions are never rewritten. File
contents are stored once per distinct content (``blobs``), so a thousand versions of a large rule
set cost little more than the lines that changed.
"""

from __future__ import annotations

import contextlib
import difflib
import getpass
import hashlib
import os
import sqlite3
import subprocess
from collections.abc import Iterator, Mapping
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from decisionloop.errors import NotFoundError, Problem

RULE_FILE_PATTERNS = ("rules/*.yaml", "strategies/*.yaml")  # what the project loader reads
HISTORY_FILE = "rules.sqlite"
RuleFiles = Mapping[str, bytes]  # path relative to the project folder -> exact bytes

_SCHEMA = """
CREATE TABLE IF NOT EXISTS versions (
    number       INTEGER PRIMARY KEY,
    created_at   TEXT NOT NULL,
    author       TEXT NOT NULL,
    message      TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    diff         TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS blobs (hash TEXT PRIMARY KEY, content BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS files (
    version INTEGER NOT NULL REFERENCES versions(number),
    path    TEXT NOT NULL,
    blob    TEXT NOT NULL REFERENCES blobs(hash),
    PRIMARY KEY (version, path)
);
CREATE INDEX IF NOT EXISTS versions_by_hash ON versions(content_hash);
"""
_APPEND_ONLY = """
CREATE TRIGGER IF NOT EXISTS {table}_no_{verb} BEFORE {verb} ON {table}
BEGIN SELECT RAISE(ABORT, 'ruleset versions are never rewritten'); END;
"""


@dataclass(frozen=True)
class RuleVersion:
    number: int
    created_at: datetime
    author: str
    message: str
    content_hash: str
    diff: str  # unified diff against the previous version (the first: against nothing)

    @property
    def id(self) -> str:
        return f"v{self.number}"


def read_rule_files(project_dir: Path) -> dict[str, bytes]:
    """The ruleset of a project folder, as the loader would read it."""
    files: dict[str, bytes] = {}
    for pattern in RULE_FILE_PATTERNS:
        for file in sorted(project_dir.glob(pattern)):
            files[file.relative_to(project_dir).as_posix()] = file.read_bytes()
    return files


def content_hash(files: RuleFiles) -> str:
    """A short hash of paths and bytes: equal rulesets, equal hashes."""
    digest = hashlib.sha256()
    for path in sorted(files):
        digest.update(path.encode() + b"\0" + hashlib.sha256(files[path]).digest())
    return digest.hexdigest()[:12]


def unified_diff(old: RuleFiles, new: RuleFiles, old_label: str, new_label: str) -> str:
    """One unified diff over every file that differs, in path order."""
    chunks: list[str] = []
    for path in sorted(set(old) | set(new)):
        before, after = old.get(path), new.get(path)
        if before == after:
            continue
        chunks.extend(
            difflib.unified_diff(
                _lines(before),
                _lines(after),
                fromfile=f"{old_label}/{path}" if before is not None else "/dev/null",
                tofile=f"{new_label}/{path}" if after is not None else "/dev/null",
            )
        )
    return "".join(chunks)


def _lines(content: bytes | None) -> list[str]:
    if content is None:
        return []
    lines = content.decode("utf-8", errors="replace").splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n\\ No newline at end of file\n"
    return lines


def resolve_author(author: str | None, project_dir: Path | None = None) -> str:
    """The given author, else ``git config user.name``, else the OS user."""
    if author and author.strip():
        return author.strip()
    with contextlib.suppress(OSError, subprocess.SubprocessError):  # no git: the OS user
        found = subprocess.run(
            ["git", "config", "user.name"],
            cwd=project_dir if project_dir is not None and project_dir.is_dir() else None,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
        if found.returncode == 0 and found.stdout.strip():
            return found.stdout.strip()
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no login name in a bare container
        return "unknown"


def parse_version(text: str | int) -> int:
    """``v3``, ``V3`` or ``3`` -> 3."""
    raw = str(text).strip().lower().removeprefix("v")
    if not raw.isdigit() or int(raw) < 1:
        raise NotFoundError(
            "no such ruleset version",
            [Problem("version", f"{text!r} is not a version; versions look like v1, v2 ...")],
        )
    return int(raw)


def write_rule_files(project_dir: Path, files: RuleFiles) -> None:
    """Make the folder's ruleset exactly ``files``: write each (atomically, byte for byte) and
    remove rule and strategy files that ``files`` does not hold."""
    for path in read_rule_files(project_dir):
        if path not in files:
            (project_dir / path).unlink()
    for path, content in files.items():
        target = project_dir / path
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.partial")
        partial.write_bytes(content)
        os.replace(partial, target)


class RuleHistory:
    """The append-only history of one project's rulesets, in ``<data_dir>/rules.sqlite``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def in_data_dir(cls, data_dir: Path) -> RuleHistory:
        return cls(data_dir / HISTORY_FILE)

    @contextmanager
    def _connect(self, write: bool = False) -> Iterator[sqlite3.Connection]:
        if write:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        with closing(sqlite3.connect(self.path, isolation_level=None)) as db:
            if write:
                db.executescript(_SCHEMA + _append_only_triggers())
                db.execute("BEGIN IMMEDIATE")  # one writer: numbers are taken in order
                try:
                    yield db
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
                db.execute("COMMIT")
            else:
                yield db

    # -- reads --------------------------------------------------------------------------------
    def versions(self) -> list[RuleVersion]:
        """Every version, oldest first."""
        if not self.path.exists():
            return []
        with self._connect() as db:
            rows = db.execute(f"SELECT {_COLUMNS} FROM versions ORDER BY number").fetchall()
        return [_version(row) for row in rows]

    def latest(self) -> RuleVersion | None:
        versions = self.versions()
        return versions[-1] if versions else None

    def get(self, version: str | int) -> RuleVersion:
        number = parse_version(version)
        row = None
        if self.path.exists():
            with self._connect() as db:
                query = f"SELECT {_COLUMNS} FROM versions WHERE number = ?"
                row = db.execute(query, (number,)).fetchone()
        if row is None:
            known = ", ".join(v.id for v in self.versions()[-5:]) or "none recorded yet"
            raise NotFoundError(
                "no such ruleset version",
                [Problem("version", f"no version v{number} (latest: {known})")],
            )
        return _version(row)

    def files(self, version: str | int) -> dict[str, bytes]:
        """The exact rule and strategy files of a version."""
        number = self.get(version).number
        with self._connect() as db:
            rows = db.execute(
                "SELECT f.path, b.content FROM files f JOIN blobs b ON b.hash = f.blob "
                "WHERE f.version = ? ORDER BY f.path",
                (number,),
            ).fetchall()
        return {path: bytes(content) for path, content in rows}

    def version_with(self, ruleset_hash: str) -> RuleVersion | None:
        """The latest version whose content has this hash (a rollback repeats a hash)."""
        if not self.path.exists():
            return None
        with self._connect() as db:
            row = db.execute(
                f"SELECT {_COLUMNS} FROM versions WHERE content_hash = ? "
                "ORDER BY number DESC LIMIT 1",
                (ruleset_hash,),
            ).fetchone()
        return _version(row) if row else None

    def diff(self, old: str | int, new: str | int) -> str:
        old_id, new_id = self.get(old).id, self.get(new).id
        return unified_diff(self.files(old), self.files(new), old_id, new_id)

    def diff_working(self, project_dir: Path, against: str | int | None = None) -> str:
        """The working folder against a version (default: the latest; none: against nothing)."""
        base = self.get(against) if against is not None else self.latest()
        old = self.files(base.number) if base else {}
        return unified_diff(old, read_rule_files(project_dir), base.id if base else "", "working")

    # -- writes -------------------------------------------------------------------------------
    def record(
        self, project_dir: Path, author: str | None = None, message: str = ""
    ) -> RuleVersion | None:
        """Record the folder's ruleset as a new version; ``None`` when it equals the latest."""
        return self._record(
            read_rule_files(project_dir), resolve_author(author, project_dir), message
        )

    def rollback(
        self, project_dir: Path, version: str | int, author: str | None = None
    ) -> RuleVersion | None:
        """Write a version's files back into the folder and record that as a new version.

        Unpublished edits in the folder are recorded first, so a rollback never loses them.
        ``None`` when the folder already holds exactly that version's files and the latest
        version does too.
        """
        target = self.get(version)
        files = self.files(target.number)
        who = resolve_author(author, project_dir)
        self._record(
            read_rule_files(project_dir), who, f"unpublished edits before rollback to {target.id}"
        )
        write_rule_files(project_dir, files)
        return self._record(files, who, f"rollback to {target.id}")

    def _record(self, files: RuleFiles, author: str, message: str) -> RuleVersion | None:
        ruleset_hash = content_hash(files)
        with self._connect(write=True) as db:
            last = db.execute(
                "SELECT number, content_hash FROM versions ORDER BY number DESC LIMIT 1"
            ).fetchone()
            if last is not None and last[1] == ruleset_hash:
                return None
            previous: dict[str, bytes] = {}
            if last is not None:
                rows = db.execute(
                    "SELECT f.path, b.content FROM files f JOIN blobs b ON b.hash = f.blob "
                    "WHERE f.version = ?",
                    (last[0],),
                ).fetchall()
                previous = {path: bytes(content) for path, content in rows}
            number = (last[0] if last else 0) + 1
            diff = unified_diff(previous, files, f"v{number - 1}" if last else "", f"v{number}")
            created_at = datetime.now(UTC)
            db.execute(
                "INSERT INTO versions VALUES (?, ?, ?, ?, ?, ?)",
                (number, created_at.isoformat(), author, message, ruleset_hash, diff),
            )
            for path, content in files.items():
                blob = hashlib.sha256(content).hexdigest()
                db.execute("INSERT OR IGNORE INTO blobs VALUES (?, ?)", (blob, content))
                db.execute("INSERT INTO files VALUES (?, ?, ?)", (number, path, blob))
        return RuleVersion(number, created_at, author, message, ruleset_hash, diff)


def ruleset_version(project_dir: Path, data_dir: Path) -> str:
    """What a decision records as its ruleset: the published version id (``v3``) when the
    folder's rules equal a recorded version, else their content hash. Never writes."""
    ruleset_hash = content_hash(read_rule_files(project_dir))
    published = RuleHistory.in_data_dir(data_dir).version_with(ruleset_hash)
    return published.id if published else ruleset_hash


_COLUMNS = "number, created_at, author, message, content_hash, diff"


def _version(row: tuple[int, str, str, str, str, str]) -> RuleVersion:
    number, created_at, author, message, ruleset_hash, diff = row
    return RuleVersion(
        number, datetime.fromisoformat(created_at), author, message, ruleset_hash, diff
    )


def _append_only_triggers() -> str:
    return "".join(
        _APPEND_ONLY.format(table=table, verb=verb)
        for table in ("versions", "blobs", "files")
        for verb in ("UPDATE", "DELETE")
    )
