"""The exception tree, in one place.

Every error decisionloop raises on purpose derives from :class:`DecisionLoopError` and carries a
stable ``code`` (documented in ``docs/errors.md``) so that clients, logs and alerts can match on it.
Library errors are translated at the boundary with ``raise ... from exc``.

    DecisionLoopError                      DL000
    ├── ConfigError                        DL100  settings or environment
    ├── DefinitionError                    DL200  project folder definitions (file, line, reason)
    │   ├── ExpressionError                DL210  a SQL expression in a rule or feature
    │   └── RestartRequiredError           DL230  a change a hot reload cannot apply
    ├── InputError                         DL300  data sent to us
    │   ├── EventValidationError           DL310  an event fails its declared type (field paths)
    │   ├── PayloadTooLargeError           DL320  a body over the configured limit
    │   ├── MappingError                   DL330  an import column mapping is wrong
    │   ├── DuplicateEventError            DL340  an event_id already ingested, with no decision
    │   └── CaseTransitionError            DL350  a case change its current status refuses
    ├── NotFoundError                      DL400  a decision, event or entity that does not exist
    └── StorageError                       DL500  the source layer could not make an event durable
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar


@dataclass(frozen=True)
class Problem:
    """One precise complaint: where (a field path or file:line:column) and why."""

    where: str
    reason: str
    line: int | None = None
    column: int | None = None
    file: str | None = None
    highlight: str | None = None

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"where": self.where, "reason": self.reason}
        for key in ("file", "line", "column", "highlight"):
            value = getattr(self, key)
            if value is not None:
                data[key] = value
        return data

    def __str__(self) -> str:
        text = f"{self.where}: {self.reason}"
        if self.highlight:
            text += "\n" + self.highlight
        return text


@dataclass
class DecisionLoopError(Exception):
    """Root of every deliberate decisionloop error."""

    message: str
    problems: list[Problem] = field(default_factory=list)
    code: ClassVar[str] = "DL000"
    http_status: ClassVar[int] = 500

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def __str__(self) -> str:
        if not self.problems:
            return self.message
        lines = [self.message] + [f"  - {p}" for p in self.problems]
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "message": self.message,
            "problems": [p.as_dict() for p in self.problems],
        }


class ConfigError(DecisionLoopError):
    code = "DL100"


class DefinitionError(DecisionLoopError):
    code = "DL200"
    http_status = 422


class ExpressionError(DefinitionError):
    code = "DL210"


class RestartRequiredError(DefinitionError):
    """Valid definitions that a running service cannot take without rebuilding online state."""

    code = "DL230"
    http_status = 409


class InputError(DecisionLoopError):
    code = "DL300"
    http_status = 422


class EventValidationError(InputError):
    code = "DL310"


class PayloadTooLargeError(InputError):
    code = "DL320"
    http_status = 413


class MappingError(InputError):
    code = "DL330"


class DuplicateEventError(InputError):
    code = "DL340"
    http_status = 409


class CaseTransitionError(InputError):
    """A valid request that the case's current status does not allow (closing an open case)."""

    code = "DL350"
    http_status = 409


class NotFoundError(DecisionLoopError):
    code = "DL400"
    http_status = 404


class StorageError(DecisionLoopError):
    code = "DL500"
    http_status = 503


ALL_ERRORS: tuple[type[DecisionLoopError], ...] = (
    DecisionLoopError,
    ConfigError,
    DefinitionError,
    ExpressionError,
    RestartRequiredError,
    InputError,
    EventValidationError,
    PayloadTooLargeError,
    MappingError,
    DuplicateEventError,
    CaseTransitionError,
    NotFoundError,
    StorageError,
)
