"""Runtime helpers shared by the closure compiler and the generated online code.

Each helper gives the Python side the exact semantics of DuckDB (and, through the SQL compiler's
rewrites, Spark), so that a rule decides online as it does in a backtest:

- ``%`` truncates toward zero (SQL, C, Java), unlike Python's floor modulo: ``-7 % 2 = -1``.
- ``upper``/``lower`` map one character to one character, as DuckDB does; Python's full case
  mappings turn ``ß`` into ``SS`` and ``İ`` into two characters.
- ``ILIKE`` lowers both sides with that mapping, then matches as ``LIKE``.
- ``hour``/``dayofweek`` read the UTC wall clock of an aware timestamp (naive ones are UTC).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any


def sql_mod(a: Any, b: Any) -> Any:
    """SQL modulo: NULL for a zero divisor, the sign of the dividend otherwise."""
    if b == 0:
        return None
    if isinstance(a, float) or isinstance(b, float):
        return math.fmod(a, b)
    remainder = abs(a) % abs(b)
    return -remainder if a < 0 else remainder


def sql_div(a: Any, b: Any) -> Any:
    """SQL division as DuckDB does it: always fractional, NULL for a zero divisor."""
    return None if b == 0 else a / b


class _CaseMap(dict[int, str]):
    """A ``str.translate`` table filled on demand: one character to exactly one character."""

    def __init__(self, convert: Callable[[str], str], exceptions: dict[str, str]) -> None:
        super().__init__()
        self.convert = convert
        self.exceptions = exceptions

    def __missing__(self, code: int) -> str:
        char = chr(code)
        mapped = self.convert(char)
        value = mapped if len(mapped) == 1 else self.exceptions.get(char, char)
        self[code] = value
        return value


# Where Python's mapping is several characters, DuckDB (utf8proc) keeps the character or takes
# its simple mapping; these are the ones it changes (checked against DuckDB by the tests).
_UPPER_EXCEPTIONS = {
    "\u00df": "\u1e9e",  # ß -> ẞ
    "\u1fb3": "\u1fbc",
    "\u1fc3": "\u1fcc",
    "\u1ff3": "\u1ffc",
    **{chr(c): chr(c + 8) for base in (0x1F80, 0x1F90, 0x1FA0) for c in range(base, base + 8)},
}
_LOWER_EXCEPTIONS = {"\u0130": "i"}  # İ -> i
_UPPER = _CaseMap(str.upper, _UPPER_EXCEPTIONS)
_LOWER = _CaseMap(str.lower, _LOWER_EXCEPTIONS)


def sql_upper(text: str) -> str:
    return text.upper() if text.isascii() else text.translate(_UPPER)


def sql_lower(text: str) -> str:
    return text.lower() if text.isascii() else text.translate(_LOWER)


def _utc(moment: datetime) -> datetime:
    zone = moment.tzinfo
    return moment if zone is None or zone is UTC else moment.astimezone(UTC)


def sql_hour(moment: datetime) -> int:
    return _utc(moment).hour


def sql_dayofweek(moment: datetime) -> int:
    """Sunday = 0 ... Saturday = 6, as DuckDB's ``dayofweek``."""
    return _utc(moment).isoweekday() % 7


def sql_least(*values: Any) -> Any:
    """DuckDB's and Spark's ``least``: NULLs are skipped; NULL only when all are NULL."""
    present = [v for v in values if v is not None]
    return min(present) if present else None


def sql_greatest(*values: Any) -> Any:
    present = [v for v in values if v is not None]
    return max(present) if present else None


def like_regex(pattern: str, case_insensitive: bool = False) -> re.Pattern[str]:
    """``%`` is any run, ``_`` any one character; no escape character (DuckDB's default)."""
    if case_insensitive:
        pattern = sql_lower(pattern)
    body = "".join(".*" if c == "%" else "." if c == "_" else re.escape(c) for c in pattern)
    return re.compile(body, re.DOTALL)


def like_matcher(pattern: str, case_insensitive: bool = False) -> Callable[[str], bool]:
    """A matcher for one pattern, using plain string tests where the pattern allows."""
    if not case_insensitive and "_" not in pattern:
        inner = pattern.strip("%")
        if "%" not in inner:
            starts, ends = pattern.startswith("%"), pattern.endswith("%") and len(pattern) > 1
            if not starts and not ends:
                return inner.__eq__
            if not starts:
                return lambda text: text.startswith(inner)
            if not ends:
                return lambda text: text.endswith(inner)
            return lambda text: inner in text
    regex = like_regex(pattern, case_insensitive)
    if case_insensitive:
        return lambda text: regex.fullmatch(sql_lower(text)) is not None
    return lambda text: regex.fullmatch(text) is not None
