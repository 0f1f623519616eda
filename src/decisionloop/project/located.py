"""YAML with positions: every value keeps the file line and column it came from.

Definitions are validated by pydantic, whose errors name a path such as ``('rules', 2, 'when')``;
:class:`LocatedDocument` turns that path back into ``file:line:column`` for the user.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from decisionloop.errors import Problem

PathKey = tuple[str | int, ...]


@dataclass(frozen=True)
class Position:
    line: int  # 1-based
    column: int  # 1-based
    block: bool = False  # a block scalar (| or >): its text starts on the next line
    indent: int = 0  # a block scalar's indentation: every line of its text starts after it
    quoted: bool = False


@dataclass
class LocatedDocument:
    file: Path
    data: Any
    positions: dict[PathKey, Position] = field(default_factory=dict)

    def position(self, path: PathKey) -> Position:
        """The position of the deepest known prefix of ``path`` (the file start if none)."""
        for cut in range(len(path), -1, -1):
            found = self.positions.get(tuple(path[:cut]))
            if found is not None:
                return found
        return Position(1, 1)

    def problem(self, path: PathKey, reason: str) -> Problem:
        pos = self.position(path)
        where = ".".join(str(p) for p in path) or "(document)"
        return Problem(
            where=f"{self.file}:{pos.line}:{pos.column} {where}",
            reason=reason,
            file=str(self.file),
            line=pos.line,
            column=pos.column,
        )

    def text_origin(self, path: PathKey) -> tuple[int, int, bool]:
        """Where the *text* of a scalar starts (line, column) and whether it is a block whose
        every line is indented by that column, for errors inside expressions."""
        pos = self.position(path)
        if pos.block:
            return pos.line + 1, pos.indent + 1, True
        return pos.line, pos.column + (1 if pos.quoted else 0), False


def load_yaml(file: Path, display: Path | None = None) -> LocatedDocument:
    """Parse one YAML file, raising a located :class:`Problem` list on syntax errors."""
    shown = display or file
    text = file.read_text(encoding="utf-8")
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = mark.line + 1 if mark else 1
        column = mark.column + 1 if mark else 1
        raise YamlSyntaxError(
            Problem(
                where=f"{shown}:{line}:{column}",
                reason=f"YAML syntax: {exc.problem or exc}",
                file=str(shown),
                line=line,
                column=column,
            )
        ) from exc
    doc = LocatedDocument(file=shown, data=None)
    scalars = yaml.SafeLoader("")
    lines = text.splitlines()
    doc.data = _convert(node, (), doc.positions, scalars, lines) if node is not None else None
    return doc


class YamlSyntaxError(Exception):
    def __init__(self, problem: Problem) -> None:
        super().__init__(str(problem))
        self.problem = problem


def _convert(
    node: yaml.Node,
    path: PathKey,
    positions: dict[PathKey, Position],
    scalars: yaml.SafeLoader,
    lines: list[str],
) -> Any:
    mark = node.start_mark
    style = getattr(node, "style", None)
    block = style in ("|", ">")
    positions[path] = Position(
        line=mark.line + 1,
        column=mark.column + 1,
        block=block,
        quoted=style in ("'", '"'),
        indent=_block_indent(lines, mark.line + 1) if block else 0,
    )
    if isinstance(node, yaml.MappingNode):
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = scalars.construct_object(key_node, deep=True)
            result[key] = _convert(value_node, (*path, key), positions, scalars, lines)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [
            _convert(child, (*path, i), positions, scalars, lines)
            for i, child in enumerate(node.value)
        ]
    return scalars.construct_object(node, deep=True)


def _block_indent(lines: list[str], first: int) -> int:
    """Indentation of a block scalar's text: that of its first non-blank line (0-based index)."""
    for line in lines[first:]:
        if line.strip():
            return len(line) - len(line.lstrip(" "))
    return 0
