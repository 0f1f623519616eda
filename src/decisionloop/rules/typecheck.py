"""A small type checker for rule expressions, run on the whitelisted sqlglot tree.

Every name in scope has a type: ``number``, ``integer``, ``string``, ``boolean`` or
``timestamp`` (event fields by their declared type, enums as strings, features as numbers).
Literals are typed by their spelling; ``NULL`` fits anywhere; ``any`` is what an unknown name or a
custom function gives, so that one mistake is reported once rather than again by every operator
above it. Integers are numbers: they compare and compute with each other freely.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Literal

from sqlglot import exp

SqlType = Literal["number", "integer", "string", "boolean", "timestamp", "null", "any"]
FIELD_TYPES: dict[str, SqlType] = {
    "string": "string",
    "enum": "string",
    "integer": "integer",
    "number": "number",
    "boolean": "boolean",
    "timestamp": "timestamp",
}
NUMERIC: frozenset[SqlType] = frozenset({"number", "integer"})
_LOOSE: frozenset[SqlType] = frozenset({"null", "any"})

_COMPARISONS: dict[type[exp.Expression], str] = {
    exp.EQ: "=",
    exp.NEQ: "<>",
    exp.GT: ">",
    exp.GTE: ">=",
    exp.LT: "<",
    exp.LTE: "<=",
}
_ARITHMETIC: dict[type[exp.Expression], str] = {
    exp.Add: "+",
    exp.Sub: "-",
    exp.Mul: "*",
    exp.Div: "/",
    exp.Mod: "%",
}


def field_type(declared: str) -> SqlType:
    """The expression type of a declared event field type (``enum`` is a string)."""
    return FIELD_TYPES[declared]


def comparable(left: SqlType, right: SqlType) -> bool:
    if left in _LOOSE or right in _LOOSE or left == right:
        return True
    return left in NUMERIC and right in NUMERIC


def is_boolean(kind: SqlType) -> bool:
    return kind == "boolean" or kind in _LOOSE


Complaint = tuple[exp.Expression, str]


class TypeChecker:
    """Infers the type of every node; collects a complaint per ill-typed node."""

    def __init__(self, types: Mapping[str, SqlType], name_of: Callable[[exp.Column], str]) -> None:
        self.types = types
        self.name_of = name_of
        self.complaints: list[Complaint] = []

    def check_condition(self, tree: exp.Expression) -> SqlType:
        kind = self.infer(tree)
        if not is_boolean(kind):
            self.complaints.append((tree, f"a condition must be boolean, got {kind}"))
        return kind

    def _fail(self, node: exp.Expression, reason: str) -> SqlType:
        self.complaints.append((node, reason))
        return "any"

    def _boolean_operand(self, node: exp.Expression, operator: str) -> None:
        kind = self.infer(node)
        if not is_boolean(kind):
            self.complaints.append((node, f"{operator} needs a boolean, got {kind}"))

    def _unify(self, node: exp.Expression, parts: Iterable[exp.Expression], what: str) -> SqlType:
        result: SqlType = "null"
        for part in parts:
            kind = self.infer(part)
            if result == "null" or kind == "any":
                result = kind
            elif kind == "null" or result == "any" or kind == result:
                continue
            elif kind in NUMERIC and result in NUMERIC:
                result = "number"
            else:
                return self._fail(part, f"{what} mixes incompatible types {result} and {kind}")
        return result

    def infer(self, node: exp.Expression) -> SqlType:
        if isinstance(node, exp.Paren):
            return self.infer(node.this)
        if isinstance(node, exp.Column):
            return self.types.get(self.name_of(node), "any")
        if isinstance(node, exp.Literal):
            if node.is_string:
                return "string"
            return "number" if any(c in node.this for c in ".eE") else "integer"
        if isinstance(node, exp.Boolean):
            return "boolean"
        if isinstance(node, exp.Null):
            return "null"
        if isinstance(node, exp.And | exp.Or):
            word = "AND" if isinstance(node, exp.And) else "OR"
            self._boolean_operand(node.this, word)
            self._boolean_operand(node.expression, word)
            return "boolean"
        if isinstance(node, exp.Not):
            self._boolean_operand(node.this, "NOT")
            return "boolean"
        comparison = _COMPARISONS.get(type(node))
        if comparison is not None:
            left, right = self.infer(node.this), self.infer(node.expression)
            if not comparable(left, right):
                return self._fail(node, f"cannot compare {left} with {right} ({comparison})")
            return "boolean"
        arithmetic = _ARITHMETIC.get(type(node))
        if arithmetic is not None:
            return self._arithmetic(node, arithmetic)
        if isinstance(node, exp.Neg | exp.Abs):
            kind = self.infer(node.this)
            if kind not in NUMERIC and kind not in _LOOSE:
                what = "'-'" if isinstance(node, exp.Neg) else "abs()"
                return self._fail(node, f"{what} needs a number, got {kind}")
            return kind
        if isinstance(node, exp.Lower | exp.Upper):
            kind = self.infer(node.this)
            if kind not in ("string", *_LOOSE):
                what = "lower()" if isinstance(node, exp.Lower) else "upper()"
                return self._fail(node, f"{what} needs a string, got {kind}")
            return "string" if kind != "any" else kind
        if isinstance(node, exp.Hour | exp.DayOfWeek):
            kind = self.infer(node.this)
            if kind not in ("timestamp", *_LOOSE):
                what = "hour()" if isinstance(node, exp.Hour) else "dayofweek()"
                return self._fail(node, f"{what} needs a timestamp, got {kind}")
            return "integer"
        if isinstance(node, exp.Is):
            kind = self.infer(node.this)
            target = node.expression
            if isinstance(target, exp.Boolean) and not is_boolean(kind):
                return self._fail(node, f"IS TRUE/FALSE needs a boolean, got {kind}")
            if not isinstance(target, exp.Boolean | exp.Null):
                return self._fail(node, "IS takes NULL, TRUE or FALSE")
            return "boolean"
        if isinstance(node, exp.In):
            value = self.infer(node.this)
            for option in node.expressions:
                kind = self.infer(option)
                if not comparable(value, kind):
                    self._fail(option, f"cannot compare {value} with {kind} (IN)")
            return "boolean"
        if isinstance(node, exp.Between):
            value = self.infer(node.this)
            for bound in (node.args["low"], node.args["high"]):
                kind = self.infer(bound)
                if not comparable(value, kind):
                    return self._fail(node, f"cannot compare {value} with {kind} (BETWEEN)")
            return "boolean"
        if isinstance(node, exp.Like | exp.ILike):
            word = "LIKE" if isinstance(node, exp.Like) else "ILIKE"
            kind = self.infer(node.this)
            pattern = node.expression
            if kind not in ("string", *_LOOSE):
                return self._fail(node, f"{word} needs a string, got {kind}")
            if not isinstance(pattern, exp.Literal) or not pattern.is_string:
                return self._fail(pattern, f"{word} needs a string literal pattern")
            return "boolean"
        if isinstance(node, exp.Case):
            return self._case(node)
        if isinstance(node, exp.If):
            self._boolean_operand(node.this, "IF")
            results = [node.args["true"]]
            if node.args.get("false") is not None:
                results.append(node.args["false"])
            return self._unify(node, results, "IF")
        if isinstance(node, exp.Coalesce | exp.Least | exp.Greatest):
            what = type(node).__name__.lower()
            return self._unify(node, [node.this, *node.expressions], f"{what}()")
        if isinstance(node, exp.Anonymous):
            for argument in node.expressions:
                self.infer(argument)
            # has_label / in_list are EXISTS lookups: TRUE or FALSE, never NULL.
            return "boolean" if node.name.lower() in ("has_label", "in_list") else "any"
        return self._fail(node, f"no type for {type(node).__name__}")  # whitelist forbids it

    def _arithmetic(self, node: exp.Expression, symbol: str) -> SqlType:
        left, right = self.infer(node.this), self.infer(node.expression)
        for kind in (left, right):
            if kind not in NUMERIC and kind not in _LOOSE:
                return self._fail(node, f"cannot apply '{symbol}' to {left} and {right}")
        if "any" in (left, right):
            return "any"
        if isinstance(node, exp.Div):
            return "number"
        if left in ("integer", "null") and right in ("integer", "null"):
            return "integer"
        return "number"

    def _case(self, node: exp.Case) -> SqlType:
        subject = node.args.get("this")
        subject_type = self.infer(subject) if subject is not None else None
        results: list[exp.Expression] = []
        for branch in node.args["ifs"]:
            condition = branch.this
            if subject_type is None:
                self._boolean_operand(condition, "CASE WHEN")
            else:
                kind = self.infer(condition)
                if not comparable(subject_type, kind):
                    self._fail(condition, f"cannot compare {subject_type} with {kind} (CASE)")
            results.append(branch.args["true"])
        if node.args.get("default") is not None:
            results.append(node.args["default"])
        return self._unify(node, results, "CASE")
