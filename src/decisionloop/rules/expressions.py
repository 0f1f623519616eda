"""SQL predicates: parsed with sqlglot, checked against a whitelist, typed, compiled to closures.

The pipeline follows sqlglot's own: text -> tokens -> tree (sqlglot) -> whitelist check (here) ->
names and types (:mod:`decisionloop.rules.typecheck`) -> :class:`Checked`, the one input of every
back end: the closures here (one per node, the reference semantics), the online compiler
(:mod:`decisionloop.rules.online`, every rule of a strategy in one generated function) and the SQL
compiler (:mod:`decisionloop.rules.sql`, DuckDB and Spark for backtests). NULL follows SQL's
three-valued logic: ``None`` is unknown, ``AND``/``OR``/``NOT`` treat it as SQL does, and
comparisons or arithmetic with it give ``None``. A rule fires only when its predicate is exactly
``True``. Functions behave as DuckDB's do (:mod:`decisionloop.rules.functions`).
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from difflib import get_close_matches
from typing import Any

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError, TokenError

from decisionloop.errors import ExpressionError, Problem
from decisionloop.ops.lookups import AS_OF, HAS_LABEL, LOOKUP_FUNCTIONS, LookupScope
from decisionloop.rules.functions import (
    like_matcher,
    sql_dayofweek,
    sql_div,
    sql_greatest,
    sql_hour,
    sql_least,
    sql_lower,
    sql_mod,
    sql_upper,
)
from decisionloop.rules.typecheck import SqlType, TypeChecker, field_type

Row = Mapping[str, Any]
Compiled = Callable[[Row], Any]
MAX_EXPRESSION_CHARS = 20_000
MAX_DEPTH = 64

# Functions beyond SQL's operators that a predicate may call, resolved at compile time.
CustomFunction = Callable[..., Any]


@dataclass(frozen=True)
class Source:
    """Where an expression's text sits, so that errors point into the definition file."""

    label: str  # e.g. "rule card_testing_burst"
    file: str | None = None
    line: int = 1  # file line where the text starts
    column: int = 1
    block: bool = False  # a YAML block scalar: every line of the text starts at `column`


def _position(text: str, offset: int) -> tuple[int, int]:
    before = text[:offset]
    line = before.count("\n") + 1
    column = offset - (before.rfind("\n") + 1) + 1
    return line, column


def expression_problem(text: str, offset: int, length: int, reason: str, source: Source) -> Problem:
    line, column = _position(text, offset)
    source_line = text.splitlines()[line - 1] if text else ""
    caret = " " * (column - 1) + "^" * max(1, length)
    file_line = source.line + line - 1
    file_column = column + (source.column - 1 if line == 1 or source.block else 0)
    where = f"{source.file}:{file_line}:{file_column}" if source.file else f"{line}:{column}"
    return Problem(
        where=f"{where} {source.label}",
        reason=reason,
        file=source.file,
        line=file_line,
        column=file_column,
        highlight=f"{source_line}\n{caret}",
    )


def node_span(node: exp.Expression) -> tuple[int, int]:
    """Offset and length of a node's text, from the token positions sqlglot keeps in ``meta``."""
    starts: list[int] = []
    ends: list[int] = []
    for part in node.walk():
        meta = getattr(part, "meta", None) or {}
        if "start" in meta and "end" in meta:
            starts.append(int(meta["start"]))
            ends.append(int(meta["end"]))
    if not starts:
        return 0, 1
    return min(starts), max(ends) - min(starts) + 1


def column_name(node: exp.Column) -> str:
    """``customer.txn_count_1h`` for a qualified column, ``amount`` for a plain one."""
    parts = [p.name for p in (node.args.get("db"), node.args.get("table")) if p is not None]
    return ".".join([*parts, node.name])


def parse(text: str, source: Source) -> exp.Expression:
    """Parse one predicate, refusing hostile or non-whitelisted input with located problems."""
    if len(text) > MAX_EXPRESSION_CHARS:
        raise ExpressionError(
            "expression too long",
            [
                expression_problem(
                    text, 0, 1, f"longer than {MAX_EXPRESSION_CHARS} characters", source
                )
            ],
        )
    if _nesting(text) > MAX_DEPTH:
        raise ExpressionError(
            "expression too deep",
            [expression_problem(text, 0, 1, f"nested deeper than {MAX_DEPTH} levels", source)],
        )
    try:
        tree: exp.Expression = sqlglot.parse_one(text, read="duckdb")  # type: ignore[assignment]
    except (ParseError, TokenError) as exc:
        errors = getattr(exc, "errors", None) or [{}]
        first = errors[0]
        line, col = int(first.get("line") or 1), int(first.get("col") or 1)
        offset = _offset(text, line, col)
        desc = _plain_parse_error(
            str(first.get("description") or exc).split("\n")[0], first.get("highlight")
        )
        problem = expression_problem(text, offset, 1, desc, source)
        raise ExpressionError("cannot parse expression", [problem]) from exc
    problems = [
        expression_problem(text, *_refused_span(text, node), reason, source)
        for node, reason in _violations(tree)
    ]
    if problems:
        raise ExpressionError("expression uses what rules may not", problems)
    return tree


def _closed_span(text: str, node: exp.Expression) -> tuple[int, int]:
    """A node's span, widened over the closing parentheses its tokens leave out (``hour(x)``:
    the ``)`` is no node's token)."""
    start, length = node_span(node)
    end = start + length
    if isinstance(node, exp.Neg):  # the minus sign carries no position
        before = text[:start].rstrip()
        if before.endswith("-"):
            start = len(before) - 1
    while text.count("(", start, end) > text.count(")", start, end):
        after = len(text[end:]) - len(text[end:].lstrip())
        if text[end + after : end + after + 1] != ")":
            break
        end += after + 1
    return start, end - start


def _refused_span(text: str, node: exp.Expression) -> tuple[int, int]:
    """A subquery's own tokens (the parentheses, SELECT) carry no position: widen its span to
    the ``(SELECT ... )`` that holds the positioned tokens inside it."""
    start, length = node_span(node)
    if not isinstance(node, exp.Subquery):
        return start, length
    openings = [m.start() for m in _SUBQUERY_START.finditer(text, 0, start + 1)]
    if not openings:
        return start, length
    depth = 0
    for closing in range(openings[-1], len(text)):
        depth += {"(": 1, ")": -1}.get(text[closing], 0)
        if depth == 0:
            return openings[-1], closing - openings[-1] + 1
    return start, length


_SUBQUERY_START = re.compile(r"\(\s*select\b", re.IGNORECASE)


def _plain_parse_error(description: str, token: Any) -> str:
    """sqlglot's messages name its internal classes; say what is wrong in the user's terms."""
    if description.startswith("Required keyword"):
        return "incomplete expression: an operand is missing"
    if description.startswith("Invalid expression / Unexpected token"):
        return f"unexpected {token!r}" if token else "unexpected text"
    return description


def _nesting(text: str) -> int:
    depth = deepest = 0
    for char in text:
        if char == "(":
            depth += 1
            deepest = max(deepest, depth)
        elif char == ")":
            depth -= 1
    return deepest


def _offset(text: str, line: int, col: int) -> int:
    lines = text.split("\n")
    return sum(len(x) + 1 for x in lines[: line - 1]) + max(col - 1, 0)


# Operators that are NULL when either side is NULL; the rest follow their own NULL rules.
BINARY: dict[type[exp.Expression], Callable[[Any, Any], Any]] = {
    exp.EQ: operator.eq,
    exp.NEQ: operator.ne,
    exp.GT: operator.gt,
    exp.GTE: operator.ge,
    exp.LT: operator.lt,
    exp.LTE: operator.le,
    exp.Add: operator.add,
    exp.Sub: operator.sub,
    exp.Mul: operator.mul,
    # SQL (DuckDB) gives NULL on division by zero rather than failing the whole decision.
    exp.Div: sql_div,
    exp.Mod: sql_mod,
}
# One-argument functions that are NULL on NULL.
FUNCTIONS: dict[type[exp.Expression], Callable[[Any], Any]] = {
    exp.Abs: abs,
    exp.Lower: sql_lower,
    exp.Upper: sql_upper,
    exp.Hour: sql_hour,
    # ISO numbering as in DuckDB's dayofweek: Sunday = 0 ... Saturday = 6, in UTC
    exp.DayOfWeek: sql_dayofweek,
}
_ALLOWED: tuple[type[exp.Expression], ...] = (
    exp.And,
    exp.Or,
    exp.Not,
    exp.Paren,
    exp.Is,
    exp.In,
    exp.Between,
    exp.Like,
    exp.ILike,
    exp.Neg,
    exp.Literal,
    exp.Boolean,
    exp.Null,
    exp.Column,
    exp.Identifier,
    exp.Case,
    exp.If,
    exp.Coalesce,
    exp.Least,
    exp.Greatest,
    exp.Anonymous,
    *BINARY,
    *FUNCTIONS,
)


def _violations(node: exp.Expression) -> Iterable[tuple[exp.Expression, str]]:
    """Refused nodes, outermost only: a subquery is one complaint, not one per node inside."""
    if not isinstance(node, _ALLOWED):
        yield (
            node,
            f"{_DESCRIBE.get(type(node), type(node).__name__)} is not allowed in a rule expression",
        )
        return
    if isinstance(node, exp.Column) and node.args.get("db") is not None:
        yield node, f"{column_name(node)!r}: names have at most one dot (entity.feature)"
        return
    if isinstance(node, exp.Between) and node.args.get("symmetric"):
        yield node, "BETWEEN SYMMETRIC is not allowed in a rule expression"
        return
    for child in node.iter_expressions():
        yield from _violations(child)


_DESCRIBE: dict[type[exp.Expression], str] = {
    exp.Subquery: "a subquery",
    exp.Select: "a SELECT",
    exp.Block: "more than one statement",
    exp.Dot: "attribute access",
}


@dataclass(frozen=True)
class Checked:
    """A predicate that parsed, passed the whitelist, refers to known names and is well typed:
    the one input of every back end (closures, the online compiler, SQL)."""

    text: str
    tree: exp.Expression
    reads: list[str]  # names read, in first-use order (for explanations)
    type: SqlType
    types: dict[str, SqlType]  # the type of every name read
    # Functions the tree calls beyond SQL's (the lookups' bound index methods), for every back end.
    functions: Mapping[str, CustomFunction] = field(default_factory=dict)


Scope = Mapping[str, SqlType | str] | Iterable[str]


class Compiler:
    """Compiles parsed predicates against the names (with their types) and functions of a scope.

    ``names`` maps each name to its type (``number``, ``integer``, ``string``, ``boolean``,
    ``timestamp``, or a declared field type such as ``enum``); a plain iterable of names is
    accepted too and leaves them untyped (``any``). With ``lookups``, ``has_label`` and
    ``in_list`` are available (:mod:`decisionloop.ops.lookups`).
    """

    def __init__(
        self,
        names: Scope,
        functions: Mapping[str, CustomFunction] | None = None,
        lookups: LookupScope | None = None,
    ) -> None:
        if isinstance(names, Mapping):
            self.types: dict[str, SqlType] = {n: _scope_type(t) for n, t in names.items()}
        else:
            self.types = dict.fromkeys(names, "any")
        self.names = frozenset(self.types)
        self.functions = dict(functions or {})
        self.lookups = lookups
        self._lookup_functions = lookups.functions() if lookups else {}
        self.functions.update(self._lookup_functions)
        self._sorted_names = sorted(self.names)

    def check(self, text: str, source: Source, condition: bool = True) -> Checked:
        """Parse, whitelist, resolve names and type-check; every problem is reported at once."""
        tree = parse(text, source)
        used: list[str] = []
        problems: list[Problem] = []
        calls = [c for c in tree.find_all(exp.Anonymous) if c.name.lower() in LOOKUP_FUNCTIONS]
        entity_args = {id(c.expressions[0]) for c in calls if _is_entity_call(c)}
        if self.lookups is not None:
            problems += [
                expression_problem(text, *node_span(node), why, source)
                for node, why in self._lookup_problems(calls)
            ]
        for node in tree.find_all(exp.Column):
            if id(node) in entity_args:
                continue
            name = column_name(node)
            if name in self.names:
                if name not in used:
                    used.append(name)
                continue
            close = get_close_matches(name, self._sorted_names, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            problems.append(
                expression_problem(text, *node_span(node), f"unknown name {name!r}{hint}", source)
            )
        for call in tree.find_all(exp.Anonymous):
            if call.name.lower() not in self.functions:
                custom = (f for f in self.functions if f not in LOOKUP_FUNCTIONS)
                known = ", ".join(sorted(custom)) or "none"
                reason = f"unknown function {call.name!r} (custom functions: {known})"
                problems.append(expression_problem(text, *node_span(call), reason, source))
        checker = TypeChecker(self.types, column_name)
        kind = checker.check_condition(tree) if condition else checker.infer(tree)
        typed = [
            expression_problem(text, *_closed_span(text, n), why, source)
            for n, why in checker.complaints
        ]
        if problems or typed:
            message = "expression refers to unknown names" if problems else "type error"
            raise ExpressionError(message, problems + typed)
        types = {n: self.types[n] for n in used}
        if calls and self.lookups is not None:
            tree = tree.transform(self._canonical_lookup, copy=False)
            for name in self._lookup_reads(calls):
                if name not in used:
                    used.append(name)
                    types[name] = "timestamp" if name == AS_OF else "string"
        functions = {c.name.lower(): self._lookup_functions[c.name.lower()] for c in calls}
        return Checked(text, tree, used, kind, types, functions)

    def _lookup_problems(self, calls: list[exp.Anonymous]) -> Iterable[tuple[exp.Expression, str]]:
        """``has_label(<entity>, '<label>')`` and ``in_list('<list>', <string>)``, nothing else."""
        assert self.lookups is not None
        entities = self.lookups.entities
        for call in calls:
            name, args = call.name.lower(), call.expressions
            shape = "(entity, 'label')" if name == HAS_LABEL else "('list name', value)"
            if len(args) != 2:
                yield call, f"{name} takes 2 arguments {shape}, got {len(args)}"
                continue
            if name == HAS_LABEL:
                entity, label = args
                if not _is_entity_call(call):
                    yield entity, f"{name} needs an entity name first {shape}"
                elif (entity_name := column_name(entity)) not in entities:
                    close = get_close_matches(entity_name, sorted(entities), n=3)
                    hint = f"; did you mean {', '.join(close)}?" if close else ""
                    known = ", ".join(sorted(entities)) or "none"
                    yield (
                        entity,
                        f"unknown entity {entity_name!r}{hint} (this event carries: {known})",
                    )
                if not _is_string_literal(label):
                    yield label, f"{name} needs the label as a string literal {shape}"
            else:
                list_name, value = args
                if not _is_string_literal(list_name):
                    yield list_name, f"{name} needs the list name as a string literal {shape}"
                kind = TypeChecker(self.types, column_name).infer(value)
                if kind not in ("string", "null", "any"):
                    yield value, f"{name} compares with string items, got {kind}"

    def _lookup_reads(self, calls: list[exp.Anonymous]) -> list[str]:
        assert self.lookups is not None
        reads: list[str] = []
        for call in calls:
            if call.name.lower() == HAS_LABEL:
                reads.append(self.lookups.entities[column_name(call.expressions[0])])
            reads.append(AS_OF)
        return reads

    def _canonical_lookup(self, node: exp.Expression) -> exp.Expression:
        """``has_label(device, 'x')`` -> ``has_label('device', device_id, 'x', decided_at)``;
        ``in_list('l', v)`` -> ``in_list('l', v, decided_at)``: every input is explicit."""
        if not isinstance(node, exp.Anonymous) or node.name.lower() not in LOOKUP_FUNCTIONS:
            return node
        assert self.lookups is not None
        name, args = node.name.lower(), node.expressions
        at = exp.column(AS_OF)
        if name == HAS_LABEL:
            entity = column_name(args[0])
            key = exp.column(self.lookups.entities[entity])
            canonical = [exp.Literal.string(entity), key, args[1], at]
        else:
            canonical = [args[0], args[1], at]
        return exp.Anonymous(this=name, expressions=canonical)

    def compile(self, text: str, source: Source) -> tuple[Compiled, list[str]]:
        """Return the closure and the names it reads (in first-use order, for explanations)."""
        checked = self.check(text, source)
        return self.closure(checked), checked.reads

    def closure(self, checked: Checked) -> Compiled:
        """One Python closure per node of a checked tree (the reference semantics)."""
        return self._node(checked.tree)

    def _node(self, node: exp.Expression) -> Compiled:
        if isinstance(node, exp.Paren):
            return self._node(node.this)
        if isinstance(node, exp.Column):
            name = column_name(node)
            return lambda row: row.get(name)
        if isinstance(node, exp.Literal):
            value: Any = literal_value(node)
            return lambda row: value
        if isinstance(node, exp.Boolean):
            flag = bool(node.this)
            return lambda row: flag
        if isinstance(node, exp.Null):
            return lambda row: None
        if isinstance(node, exp.And):
            return _and(self._node(node.this), self._node(node.expression))
        if isinstance(node, exp.Or):
            return _or(self._node(node.this), self._node(node.expression))
        if isinstance(node, exp.Not):
            inner = self._node(node.this)
            return lambda row: None if (v := inner(row)) is None else not v
        if isinstance(node, exp.Neg):
            inner = self._node(node.this)
            return lambda row: None if (v := inner(row)) is None else -v
        binary = BINARY.get(type(node))
        if binary is not None:
            return _strict2(binary, self._node(node.this), self._node(node.expression))
        function = FUNCTIONS.get(type(node))
        if function is not None:
            inner = self._node(node.this)
            return lambda row: None if (v := inner(row)) is None else function(v)
        if isinstance(node, exp.Is | exp.Like | exp.ILike) and node.args.get("negate"):
            # sqlglot keeps `x NOT LIKE p` as a flag on the node: it is NOT (x LIKE p).
            plain = node.copy()
            plain.set("negate", None)
            return self._node(exp.Not(this=plain))
        if isinstance(node, exp.Is):
            inner = self._node(node.this)
            target = node.expression
            if isinstance(target, exp.Boolean):
                flag = bool(target.this)
                return lambda row: inner(row) is flag
            return lambda row: inner(row) is None
        if isinstance(node, exp.In):
            return self._in(node)
        if isinstance(node, exp.Between):
            value, low, high = (self._node(node.args[k]) for k in ("this", "low", "high"))
            return _and(_strict2(operator.ge, value, low), _strict2(operator.le, value, high))
        if isinstance(node, exp.Like | exp.ILike):
            return self._like(node)
        if isinstance(node, exp.Case):
            return self._case(node)
        if isinstance(node, exp.If):
            return self._case(if_as_case(node))
        if isinstance(node, exp.Coalesce):
            parts = [self._node(node.this), *(self._node(e) for e in node.expressions)]
            return lambda row: next((v for p in parts if (v := p(row)) is not None), None)
        if isinstance(node, exp.Least | exp.Greatest):
            parts = [self._node(node.this), *(self._node(e) for e in node.expressions)]
            # DuckDB's least/greatest skip NULLs and give NULL only when all are NULL.
            pick = sql_least if isinstance(node, exp.Least) else sql_greatest
            return lambda row: pick(*(p(row) for p in parts))
        if isinstance(node, exp.Anonymous):
            function_impl = self.functions[node.name.lower()]
            args = [self._node(e) for e in node.expressions]
            return lambda row: function_impl(*(a(row) for a in args))
        raise ExpressionError(f"no compiler for {type(node).__name__}")  # whitelist forbids it

    def _in(self, node: exp.In) -> Compiled:
        value = self._node(node.this)
        options = [self._node(e) for e in node.expressions]

        def evaluate(row: Row) -> Any:
            v = value(row)
            if v is None:
                return None
            unknown = False
            for option in options:
                o = option(row)
                if o is None:
                    unknown = True
                elif o == v:
                    return True
            return None if unknown else False

        return evaluate

    def _like(self, node: exp.Like | exp.ILike) -> Compiled:
        value = self._node(node.this)
        pattern_node = node.expression
        if not isinstance(pattern_node, exp.Literal) or not pattern_node.is_string:
            raise ExpressionError("LIKE needs a string literal pattern")
        matches = like_matcher(pattern_node.this, isinstance(node, exp.ILike))
        return lambda row: None if (v := value(row)) is None else matches(v)

    def _case(self, node: exp.Case) -> Compiled:
        subject_node = node.args.get("this")
        branches: list[tuple[Compiled, Compiled]] = []
        for branch in node.args["ifs"]:
            condition = branch.this
            if subject_node is not None:  # CASE x WHEN v: the condition is x = v
                condition = exp.EQ(this=subject_node, expression=condition)
            branches.append((self._node(condition), self._node(branch.args["true"])))
        default_node = node.args.get("default")
        default = self._node(default_node) if default_node is not None else (lambda row: None)

        def evaluate(row: Row) -> Any:
            for condition, result in branches:
                if condition(row) is True:
                    return result(row)
            return default(row)

        return evaluate


def _is_entity_call(call: exp.Anonymous) -> bool:
    """``has_label(device, ...)``: its first argument is a bare name (the entity)."""
    args = call.expressions
    return (
        call.name.lower() == HAS_LABEL
        and bool(args)
        and isinstance(args[0], exp.Column)
        and args[0].args.get("table") is None
    )


def _is_string_literal(node: exp.Expression) -> bool:
    return isinstance(node, exp.Literal) and node.is_string


def if_as_case(node: exp.If) -> exp.Case:
    """``if(c, a, b)`` is ``CASE WHEN c THEN a ELSE b END``."""
    return exp.Case(
        ifs=[exp.If(this=node.this, true=node.args["true"])], default=node.args.get("false")
    )


def literal_value(node: exp.Literal) -> Any:
    return node.this if node.is_string else _number(node.this)


def _scope_type(kind: SqlType | str) -> SqlType:
    if kind in ("null", "any"):
        return kind
    return field_type(kind)


def _number(text: str) -> int | float:
    return float(text) if any(c in text for c in ".eE") else int(text)


def _strict2(fn: Callable[[Any, Any], Any], left: Compiled, right: Compiled) -> Compiled:
    def evaluate(row: Row) -> Any:
        a = left(row)
        if a is None:
            return None
        b = right(row)
        if b is None:
            return None
        return fn(a, b)

    return evaluate


def _and(left: Compiled, right: Compiled) -> Compiled:
    def evaluate(row: Row) -> Any:
        a = left(row)
        if a is False:
            return False
        b = right(row)
        if b is False:
            return False
        return None if a is None or b is None else True

    return evaluate


def _or(left: Compiled, right: Compiled) -> Compiled:
    def evaluate(row: Row) -> Any:
        a = left(row)
        if a is True:
            return True
        b = right(row)
        if b is True:
            return True
        return None if a is None or b is None else False

    return evaluate
