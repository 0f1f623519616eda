"""An append-only journal: what makes an accepted event durable before its answer leaves.

DuckDB is a columnar store: each of its commits costs milliseconds of CPU whatever it carries, so
committing every request there would bound the service at a few hundred commits a second. The
journal is the classic remedy (a write-ahead log): records are appended to a segment file and
fsync'd in groups, which costs a fraction of a millisecond; a loader moves them into DuckDB in
large batches behind the scenes, and on start whatever the journal holds beyond DuckDB's mark is
loaded again. One process, one writer at a time: this is a local file, not a distributed log.

Each line is ``<crc32 hex> <json>\\n``. A line torn by a crash fails its checksum and is dropped
with everything after it: such records were never acknowledged, since their fsync never returned.
"""

from __future__ import annotations

import logging
import os
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import orjson

log = logging.getLogger(__name__)
SEGMENT_BYTES = 64 * 1024 * 1024


@dataclass
class Segment:
    path: Path
    last_seq: int = -1


def encode(row: list[Any]) -> bytes:
    body = orjson.dumps(row)
    return b"%08x " % zlib.crc32(body) + body + b"\n"


def read_segment(path: Path) -> Iterator[list[Any]]:
    """The intact records of one segment, stopping at the first torn or corrupt line."""
    with path.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            crc, _, body = line.rstrip(b"\n").partition(b" ")
            try:
                intact = line.endswith(b"\n") and int(crc, 16) == zlib.crc32(body)
            except ValueError:
                intact = False
            if not intact:
                log.warning("journal %s: line %d is torn; dropping it and the rest", path, number)
                return
            yield orjson.loads(body)


class Journal:
    """Segments ``journal-<n>.log`` in one folder; appended by one writer at a time (the source
    layer's commit lock: the event loop's group commit or the importer's writer thread)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.segments: list[Segment] = [Segment(p) for p in sorted(folder.glob("journal-*.log"))]
        self._handle: BinaryIO | None = None
        self._size = 0
        self._lock = threading.Lock()  # the writer rotates while the loader releases

    def recover(self) -> Iterator[list[Any]]:
        """Every intact record still in the journal, oldest first (call before appending)."""
        for segment in self.segments:
            for row in read_segment(segment.path):
                segment.last_seq = max(segment.last_seq, int(row[0]))
                yield row

    def append(self, lines: list[bytes], last_seq: int) -> None:
        """Write and fsync: when this returns, the records survive a crash of the process."""
        if self._handle is None or self._size >= SEGMENT_BYTES:
            self._rotate()
        assert self._handle is not None
        data = b"".join(lines)
        self._handle.write(data)
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self._size += len(data)
        with self._lock:
            self.segments[-1].last_seq = last_seq

    def abandon_segment(self) -> None:
        """After a failed write the segment may end in a torn line: later records go to a new
        segment, so that recovery (which stops at a torn line) still reaches them."""
        if self._handle is not None:
            try:
                self._handle.close()
            except OSError:
                log.exception("closing a failed journal segment")
            self._handle = None

    def _rotate(self) -> None:
        if self._handle is not None:
            self._handle.close()
        number = int(self.segments[-1].path.stem.split("-")[1]) + 1 if self.segments else 1
        path = self.folder / f"journal-{number:08d}.log"
        self._handle = path.open("ab")
        self._size = 0
        with self._lock:
            self.segments.append(Segment(path))
        _fsync_folder(self.folder)  # the new file's name must survive a crash too

    def release(self, loaded_seq: int) -> None:
        """Delete closed segments whose every record is loaded into the store."""
        with self._lock:
            while len(self.segments) > 1 and self.segments[0].last_seq <= loaded_seq:
                self.segments.pop(0).path.unlink(missing_ok=True)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def _fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
