"""Read rows from CSV, Parquet or JSONL files, in chunks, with the total for progress bars."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import polars as pl

from decisionloop.errors import InputError, Problem

FORMATS = ("csv", "parquet", "jsonl")


def detect_format(path: Path) -> str:
    suffix = path.suffix.lower().lstrip(".")
    if suffix in ("ndjson", "json"):
        suffix = "jsonl"
    if suffix not in FORMATS:
        raise InputError(
            "unknown file format",
            [Problem(str(path), f"expected one of .{', .'.join(FORMATS)}; got {path.suffix!r}")],
        )
    return suffix


def count_rows(path: Path) -> int:
    fmt = detect_format(path)
    if fmt == "parquet":
        return int(pl.scan_parquet(path).select(pl.len()).collect().item())
    if fmt == "csv":
        return int(pl.scan_csv(path, infer_schema=False).select(pl.len()).collect().item())
    with path.open("rb") as handle:
        return sum(1 for _ in handle)


def read_rows(path: Path, chunk: int = 5000) -> Iterator[list[Any]]:
    """Yield lists of rows (dicts; for JSONL whatever each line holds, errors as exceptions)."""
    fmt = detect_format(path)
    if fmt == "jsonl":
        yield from _jsonl(path, chunk)
        return
    # CSV is read as text so that conversion errors are ours, per row, with the row number.
    frame = pl.read_parquet(path) if fmt == "parquet" else pl.read_csv(path, infer_schema=False)
    for start in range(0, frame.height, chunk):
        yield frame.slice(start, chunk).to_dicts()


class BadLine:
    def __init__(self, reason: str) -> None:
        self.reason = reason


class BlankLine:
    """A blank JSONL line: skipped, but counted so that row numbers stay line numbers."""


def _jsonl(path: Path, chunk: int) -> Iterator[list[Any]]:
    rows: list[Any] = []
    with path.open("rb") as handle:
        for line in handle:
            if not line.strip():
                rows.append(BlankLine())
                continue
            try:
                rows.append(orjson.loads(line))
            except orjson.JSONDecodeError as exc:
                rows.append(BadLine(f"not valid JSON: {exc.msg}"))
            if len(rows) >= chunk:
                yield rows
                rows = []
    if rows:
        yield rows
