"""The online compiler: every rule of a strategy in ONE generated Python function.

The closure compiler in :mod:`decisionloop.rules.expressions` is the reference semantics; this
module generates straight-line Python source from the same checked sqlglot trees and compiles it
once, so that one event costs one call, not one closure call per node per rule. The generated
function takes a row (a dict of names to values) and returns the sorted indices of the rules whose
predicate is TRUE.

How the work is shared:

1. **Names** are read once into locals (``n0 = get('amount')``). A numeric name compared with
   literals also gets a second local with NULL as NaN (``m0``), so that "is ``m0 > 1000`` TRUE"
   needs no NULL test: every comparison with NaN is false, exactly the events where SQL says
   NULL. ``number`` values are taken as floats, as DuckDB's DOUBLE columns are, and compared
   with float literals: float-to-float comparisons are the ones CPython specializes.
2. **Rules are conjunctions.** Each predicate's top-level ``AND`` (and ``BETWEEN``) is flattened
   into conjuncts. A rule fires only when every conjunct is TRUE, so conjuncts are compiled in
   "is TRUE" form (``n0 is not None and n0 > 1000``) rather than as three-valued values; ``NOT``,
   ``OR`` and ``AND`` below them are compiled in "is TRUE"/"is FALSE" forms that never build the
   intermediate unknown.
3. **Guards index the rules.** A conjunct ``name = literal``, ``name IN (literals)``, a boolean
   name, or ``name <op> literal`` is a guard. Rules are grouped by the name their guards test,
   largest group first; within a group

   - equality guards dispatch on the value (an ``if/elif`` chain for a few values, a dict lookup
     and a binary decision tree over the value's index for more), so only the rules expecting the
     event's value are looked at;
   - range guards are sorted by bound and nested (``if m0 > 100.0: ... if m0 > 500.0: ...``):
     the first bound that fails skips every rule behind it.

   Each branch is built the same way from the rules' remaining conjuncts, so a test shared by
   many rules (``channel = 'transfer'``, ``amount > 1000``) is evaluated once per event for all
   of them, and a rule whose guard fails costs nothing at all.
4. **Shared sub-expressions** that are not plain names or literals (``0.7 * balance_before``,
   ``hour(occurred_at)``, ``lower(merchant)``...) and occur more than once are computed at most
   once per event, on first use, into a local.

Safety: the source is generated from whitelisted trees only. User text reaches it solely as
``repr()`` of a string or number (names and literals); every identifier is ours.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlglot import exp

from decisionloop.errors import ExpressionError
from decisionloop.rules.expressions import Checked, CustomFunction, column_name, literal_value
from decisionloop.rules.functions import (
    like_matcher,
    sql_dayofweek,
    sql_greatest,
    sql_hour,
    sql_least,
    sql_lower,
    sql_mod,
    sql_upper,
)
from decisionloop.rules.typecheck import SqlType

Row = Mapping[str, Any]
Evaluate = Callable[[Row], list[int]]
# An IR node: a tuple whose first item names its kind; hashable, so equal subtrees share a key.
Node = tuple[Any, ...]

EQ_CHAIN_MAX = 4  # up to this many values an if/elif chain beats a dict lookup
CHAIN_DEPTH = 8  # nested range steps before a new chain starts (bounds the indentation)
MAX_INDENT = 60  # beyond this, rules are tested one by one (Python allows 100 levels)
MAX_MEMO = 256  # shared sub-expressions kept in locals (a frame's size grows with its locals)

_COMPARE: dict[type[exp.Expression], str] = {
    exp.EQ: "==",
    exp.NEQ: "!=",
    exp.GT: ">",
    exp.GTE: ">=",
    exp.LT: "<",
    exp.LTE: "<=",
}
_FLIP = {"==": "==", "!=": "!=", ">": "<", ">=": "<=", "<": ">", "<=": ">="}
_ARITH: dict[type[exp.Expression], str] = {exp.Add: "+", exp.Sub: "-", exp.Mul: "*"}
_UNARY: dict[type[exp.Expression], tuple[str, Callable[[Any], Any]]] = {
    exp.Abs: ("abs", abs),
    exp.Lower: ("lower", sql_lower),
    exp.Upper: ("upper", sql_upper),
    exp.Hour: ("hour", sql_hour),
    exp.DayOfWeek: ("dayofweek", sql_dayofweek),
}
_VALUE_KINDS = frozenset(
    {"arith", "div", "mod", "neg", "fn", "case", "coalesce", "least", "greatest", "call", "like"}
)


class _Unset:
    """The marker of a shared sub-expression not computed yet for this event."""

    def __repr__(self) -> str:
        return "<unset>"


_U = _Unset()


def _in_list(value: Any, options: Sequence[Any]) -> Any:
    """SQL ``IN`` over computed options (the literal-only case is a set test)."""
    if value is None:
        return None
    unknown = False
    for option in options:
        if option is None:
            unknown = True
        elif option == value:
            return True
    return None if unknown else False


@dataclass(frozen=True)
class Guard:
    """An indexable conjunct: ``name = v`` / ``name IN (vs)`` (eq) or ``name op bound``."""

    name: str
    kind: str  # "eq" | "range"
    values: tuple[Any, ...] = ()  # eq: the values that make it TRUE
    op: str = ""  # range: > >= < <=
    bound: Any = None


@dataclass(frozen=True)
class Conjunct:
    node: Node
    guard: Guard | None
    cost: int


Item = tuple[int, tuple[Conjunct, ...]]


@dataclass
class OnlineRules:
    """The compiled function and what it was built from (source kept for inspection)."""

    evaluate: Evaluate
    source: str
    rules: int
    stats: dict[str, int] = field(default_factory=dict)

    def __call__(self, row: Row) -> list[int]:
        return self.evaluate(row)


def compile_online(
    predicates: Sequence[Checked],
    functions: Mapping[str, CustomFunction] | None = None,
    name: str = "evaluate_rules",
) -> OnlineRules:
    """Compile every predicate into one function returning the indices of those that are TRUE."""
    bound: dict[str, CustomFunction] = {}
    for checked in predicates:  # the lookups' index methods travel with their trees
        bound.update(checked.functions)
    return _Generator(predicates, {**bound, **(functions or {})}).build(name)


# -- lowering: sqlglot tree -> IR ----------------------------------------------------------------
def lower(node: exp.Expression) -> Node:
    """The IR of a checked tree: parentheses gone, literals typed, ``BETWEEN`` and ``IF`` spelt
    in terms of comparisons and ``CASE``, literal-first comparisons turned round."""
    if isinstance(node, exp.Paren):
        return lower(node.this)
    if isinstance(node, exp.Is | exp.Like | exp.ILike) and node.args.get("negate"):
        plain = node.copy()
        plain.set("negate", None)
        return ("not", lower(plain))
    if isinstance(node, exp.Column):
        return ("col", column_name(node))
    if isinstance(node, exp.Literal):
        return _lit(literal_value(node))
    if isinstance(node, exp.Boolean):
        return _lit(bool(node.this))
    if isinstance(node, exp.Null):
        return _lit(None)
    if isinstance(node, exp.And):
        return ("and", lower(node.this), lower(node.expression))
    if isinstance(node, exp.Or):
        return ("or", lower(node.this), lower(node.expression))
    if isinstance(node, exp.Not):
        return ("not", lower(node.this))
    if isinstance(node, exp.Neg):
        return ("neg", lower(node.this))
    op = _COMPARE.get(type(node))
    if op is not None:
        left, right = lower(node.this), lower(node.expression)
        if left[0] == "lit" and right[0] != "lit":
            return ("cmp", _FLIP[op], right, left)
        return ("cmp", op, left, right)
    arith = _ARITH.get(type(node))
    if arith is not None:
        return ("arith", arith, lower(node.this), lower(node.expression))
    if isinstance(node, exp.Div):
        return ("div", lower(node.this), lower(node.expression))
    if isinstance(node, exp.Mod):
        return ("mod", lower(node.this), lower(node.expression))
    unary = _UNARY.get(type(node))
    if unary is not None:
        return ("fn", unary[0], lower(node.this))
    if isinstance(node, exp.Is):
        target = node.expression
        flag = bool(target.this) if isinstance(target, exp.Boolean) else None
        return ("is", lower(node.this), flag)
    if isinstance(node, exp.In):
        return ("in", lower(node.this), tuple(lower(e) for e in node.expressions))
    if isinstance(node, exp.Between):
        value = lower(node.this)
        low, high = lower(node.args["low"]), lower(node.args["high"])
        return ("and", ("cmp", ">=", value, low), ("cmp", "<=", value, high))
    if isinstance(node, exp.Like | exp.ILike):
        pattern = node.expression
        if not isinstance(pattern, exp.Literal) or not pattern.is_string:
            raise ExpressionError("LIKE needs a string literal pattern")
        return ("like", lower(node.this), pattern.this, isinstance(node, exp.ILike))
    if isinstance(node, exp.Case | exp.If):
        return _lower_case(node)
    if isinstance(node, exp.Coalesce | exp.Least | exp.Greatest):
        kind = type(node).__name__.lower()
        return (kind, tuple(lower(e) for e in [node.this, *node.expressions]))
    if isinstance(node, exp.Anonymous):
        return ("call", node.name.lower(), tuple(lower(e) for e in node.expressions))
    raise ExpressionError(f"no online compiler for {type(node).__name__}")  # whitelist forbids it


def _lit(value: Any) -> Node:
    # The type is part of the key: 1, 1.0 and TRUE are equal in Python but not the same literal.
    return ("lit", type(value).__name__, value)


def _lower_case(node: exp.Case | exp.If) -> Node:
    if isinstance(node, exp.If):
        false = node.args.get("false")
        default = lower(false) if false is not None else _lit(None)
        return ("case", ((lower(node.this), lower(node.args["true"])),), default)
    subject = node.args.get("this")
    branches = []
    for branch in node.args["ifs"]:
        condition = lower(branch.this)
        if subject is not None:  # CASE x WHEN v: the condition is x = v
            condition = ("cmp", "==", lower(subject), condition)
        branches.append((condition, lower(branch.args["true"])))
    default_node = node.args.get("default")
    return ("case", tuple(branches), lower(default_node) if default_node else _lit(None))


def conjuncts(node: Node) -> list[Node]:
    if node[0] == "and":
        return conjuncts(node[1]) + conjuncts(node[2])
    return [node]


def _children(node: Node) -> list[Node]:
    children: list[Node] = []
    for part in node[1:]:
        if type(part) is not tuple or not part:
            continue
        if type(part[0]) is str:
            children.append(part)  # a node
            continue
        for item in part:  # IN options, function arguments, CASE branches
            if type(item[0]) is str:
                children.append(item)
            else:
                children.extend(item)  # a CASE branch: (condition, result)
    return children


def _walk(node: Node) -> Iterable[Node]:
    stack = [node]
    while stack:
        current = stack.pop()
        yield current
        stack.extend(_children(current))


# -- code generation -----------------------------------------------------------------------------
class _Generator:
    def __init__(self, predicates: Sequence[Checked], functions: dict[str, CustomFunction]):
        self.predicates = predicates
        self.functions = functions
        self.types: dict[str, SqlType] = {}
        for checked in predicates:
            self.types.update(checked.types)
        self.locals: dict[str, str] = {}  # name -> local variable
        self.nan_locals: dict[str, str] = {}  # numeric name -> local with NULL as NaN
        self.constants: dict[str, Any] = {}
        self._constant_ids: dict[tuple[str, Hashable], str] = {}
        self.memo: dict[Node, str] = {}
        self.stats: Counter[str] = Counter()

    # constants and locals
    def const(self, prefix: str, value: Any, key: Hashable | None = None) -> str:
        if key is not None and (prefix, key) in self._constant_ids:
            return self._constant_ids[(prefix, key)]
        ident = f"_{prefix}{len(self.constants)}"
        self.constants[ident] = value
        if key is not None:
            self._constant_ids[(prefix, key)] = ident
        return ident

    def local(self, name: str) -> str:
        ident = self.locals.get(name)
        if ident is None:
            ident = self.locals[name] = f"n{len(self.locals)}"
        return ident

    def literal(self, node: Node) -> str:
        return self.py(node[2])

    def py(self, value: Any) -> str:
        """Python source for a literal value: its repr, or a constant for an infinite float."""
        if isinstance(value, float) and not math.isfinite(value):
            return self.const("X", value, ("float", repr(value)))
        return repr(value)

    # the three forms of a node
    def value(self, node: Node, depth: int) -> str:
        """Python expression giving the node's three-valued value (``None`` for NULL)."""
        kind = node[0]
        if kind == "col":
            return self.local(node[1])
        if kind == "lit":
            return self.literal(node)
        memo = self.memo.get(node)
        if memo is not None:
            self.stats["memo_uses"] += 1
            return f"({memo} if {memo} is not _U else ({memo} := {self._value(node, depth)}))"
        return self._value(node, depth)

    def _value(self, node: Node, depth: int) -> str:
        kind = node[0]
        a, b = f"_a{depth}", f"_b{depth}"
        d = depth + 1
        if kind == "and":
            return (
                f"(False if ({a} := {self.value(node[1], d)}) is False else "
                f"(False if ({b} := {self.value(node[2], d)}) is False else "
                f"(None if {a} is None or {b} is None else True)))"
            )
        if kind == "or":
            return (
                f"(True if ({a} := {self.value(node[1], d)}) is True else "
                f"(True if ({b} := {self.value(node[2], d)}) is True else "
                f"(None if {a} is None or {b} is None else False)))"
            )
        if kind == "not":
            x, x_null, _ = self.operand(node[1], a, d)
            return _unless_null(x_null, f"not {x}")
        if kind == "neg":
            x, x_null, _ = self.operand(node[1], a, d)
            return _unless_null(x_null, f"-{x}")
        if kind in ("cmp", "arith", "div", "mod"):
            op = node[1] if kind in ("cmp", "arith") else None
            left, right = (node[2], node[3]) if op else (node[1], node[2])
            x, x_test, _ = self.operand(left, a, d)
            y, y_test, _ = self.operand(right, b, d)
            nulls = " or ".join(t for t in (x_test, y_test) if t)
            if kind == "div":
                nulls = f"{nulls} or {y} == 0" if nulls else f"{y} == 0"
                result = f"{x} / {y}"
            elif kind == "mod":
                result = f"_mod({x}, {y})"
            else:
                result = f"{x} {op} {y}"
            return _unless_null(nulls, result)
        if kind == "fn":
            fn = {"abs": "abs", "lower": "_lower", "upper": "_upper", "hour": "_hour"}.get(
                node[1], "_dow"
            )
            x, x_null, _ = self.operand(node[2], a, d)
            return _unless_null(x_null, f"{fn}({x})")
        if kind == "is":
            if node[1][0] == "lit":
                return repr(node[1][2] is node[2])
            return f"({self.value(node[1], d)} is {node[2]!r})"
        if kind == "in":
            return self._in_value(node, a, d)
        if kind == "like":
            matcher = self.const("M", like_matcher(node[2], node[3]), ("like", node[2], node[3]))
            x, x_null, _ = self.operand(node[1], a, d)
            return _unless_null(x_null, f"{matcher}({x})")
        if kind == "case":
            text = self.value(node[2], d)
            for condition, result in reversed(node[1]):
                text = f"({self.value(result, d)} if {self.true(condition, d)} else {text})"
            return text
        if kind == "coalesce":
            parts = node[1]
            text = self.value(parts[-1], d)
            for part in reversed(parts[:-1]):
                text = f"({a} if ({a} := {self.value(part, d)}) is not None else {text})"
            return text
        if kind in ("least", "greatest"):
            args = ", ".join(self.value(p, d) for p in node[1])
            return f"{'_least' if kind == 'least' else '_greatest'}({args})"
        if kind == "call":
            fn = self.const("F", self.functions[node[1]], ("fn", node[1]))
            return f"{fn}({', '.join(self.value(p, d) for p in node[2])})"
        raise ExpressionError(f"no online form for {kind}")

    def operand(self, node: Node, temp: str, depth: int) -> tuple[str, str, str]:
        """An operand's expression, its NULL test and its not-NULL test ("" when it cannot be
        NULL). A computed operand is bound to ``temp`` by whichever test runs first."""
        if node[0] == "col":
            ident = self.local(node[1])
            return ident, f"{ident} is None", f"{ident} is not None"
        if node[0] == "lit":
            if node[2] is None:
                return "None", "True", "False"
            return self.literal(node), "", ""
        value = self.value(node, depth)
        return temp, f"({temp} := {value}) is None", f"({temp} := {value}) is not None"

    def _in_value(self, node: Node, a: str, d: int) -> str:
        subject, options = node[1], node[2]
        if all(o[0] == "lit" for o in options) and self._hashable(subject):
            present = frozenset(o[2] for o in options if o[2] is not None)
            has_null = any(o[2] is None for o in options)
            values = self.const("S", present, ("set", *sorted(map(repr, present))))
            inner = self.value(subject, d)
            if not present:
                return "None"
            hit = f"(True if {a} in {values} else None)" if has_null else f"({a} in {values})"
            return f"(None if ({a} := {inner}) is None else {hit})"
        args = ", ".join(self.value(o, d) for o in options)
        return f"_in_list({self.value(subject, d)}, ({args},))"

    def _hashable(self, node: Node) -> bool:
        """Values of a typed name or of a typed expression are scalars, hence hashable."""
        if node[0] == "col":
            return self.types.get(node[1], "any") != "any"
        return node[0] not in ("call",)

    def true(self, node: Node, depth: int) -> str:
        """Python boolean expression: is the node TRUE?"""
        return self._truth(node, depth, True)

    def false(self, node: Node, depth: int) -> str:
        """Python boolean expression: is the node FALSE?"""
        return self._truth(node, depth, False)

    def _truth(self, node: Node, depth: int, want: bool) -> str:
        kind = node[0]
        d = depth + 1
        if kind == "and" or kind == "or":
            # TRUE of AND: both TRUE; FALSE of AND: either FALSE (dually for OR).
            joiner = " and " if (kind == "and") == want else " or "
            parts = [self._truth(node[1], d, want), self._truth(node[2], d, want)]
            return f"({joiner.join(parts)})"
        if kind == "not":
            return self._truth(node[1], d, not want)
        if kind == "lit":
            return repr(node[2] is want)
        if kind == "col" and self.types.get(node[1]) == "boolean":
            return f"{self.local(node[1])} is {want!r}"
        if kind == "is":
            if node[1][0] == "lit":
                return repr((node[1][2] is node[2]) is want)
            subject = self.value(node[1], d)
            return f"({subject} {'is' if want else 'is not'} {node[2]!r})"
        if kind == "cmp":
            return self._compare(node, depth, want)
        if kind == "like" and node[1][0] == "col":
            matcher = self.const("M", like_matcher(node[2], node[3]), ("like", node[2], node[3]))
            ident = self.local(node[1][1])
            test = f"{matcher}({ident})" if want else f"not {matcher}({ident})"
            return f"({ident} is not None and {test})"
        if (
            kind == "in"
            and node[1][0] == "col"
            and self._hashable(node[1])
            and all(o[0] == "lit" for o in node[2])
        ):
            present = frozenset(o[2] for o in node[2] if o[2] is not None)
            has_null = any(o[2] is None for o in node[2])
            values = self.const("S", present, ("set", *sorted(map(repr, present))))
            ident = self.local(node[1][1])
            if want:
                return f"({ident} in {values})" if present else "False"
            if has_null:
                return "False"  # never FALSE: NULL unless it matches
            return f"({ident} is not None and {ident} not in {values})"
        return f"({self.value(node, depth)} is {want!r})"

    def _compare(self, node: Node, depth: int, want: bool) -> str:
        op, left, right = node[1], node[2], node[3]
        d = depth + 1
        if _is_null(left) or _is_null(right):
            return "False"
        if want and op != "!=" and self._numeric(left) and self._numeric(right):
            # NaN stands for NULL: every comparison with it is false, as "is TRUE" needs.
            as_float = self._is_number(left) or self._is_number(right)
            x, y = self.nan_operand(left, as_float), self.nan_operand(right, as_float)
            return f"({x} {op} {y})"
        x, _, x_ok = self.operand(left, f"_a{depth}", d)
        y, _, y_ok = self.operand(right, f"_b{depth}", d)
        if want and op == "==" and right[0] == "lit" and left[0] == "col":
            return f"({x} == {y})"  # None == literal is False
        checks = [t for t in (x_ok, y_ok) if t]
        test = f"{x} {op} {y}" if want else f"not ({x} {op} {y})"
        return f"({' and '.join([*checks, test])})"

    def _numeric(self, node: Node) -> bool:
        """A numeric name or a non-NULL numeric literal: one that has a NaN-for-NULL form."""
        if node[0] == "col":
            return self.types.get(node[1]) in ("number", "integer")
        return node[0] == "lit" and node[1] in ("int", "float")

    def _is_number(self, node: Node) -> bool:
        return node[0] == "col" and self.types.get(node[1]) == "number"

    def nan_operand(self, node: Node, as_float: bool) -> str:
        if node[0] == "lit":
            return self.py(_as_float(node[2]) if as_float else node[2])
        return self.nan_local(node[1])

    def nan_local(self, name: str) -> str:
        """The local holding a numeric name's value with NULL as NaN (read once per event).

        ``number`` values are made floats, as DuckDB's DOUBLE columns are: comparisons are then
        float to float (literals are written as floats too), which CPython specializes.
        """
        ident = self.nan_locals.get(name)
        if ident is None:
            ident = self.nan_locals[name] = f"m{len(self.nan_locals)}"
            self.local(name)
        return ident

    # rule structure
    def guard(self, node: Node) -> Guard | None:
        kind = node[0]
        if kind == "col" and self.types.get(node[1]) == "boolean":
            return Guard(node[1], "eq", (True,))
        if kind == "not" and node[1][0] == "col" and self.types.get(node[1][1]) == "boolean":
            return Guard(node[1][1], "eq", (False,))
        if (
            kind == "is"
            and node[1][0] == "col"
            and node[2] is not None
            and self.types.get(node[1][1]) == "boolean"
        ):
            return Guard(node[1][1], "eq", (node[2],))
        if kind == "cmp" and node[2][0] == "col" and node[3][0] == "lit":
            name, bound = node[2][1], node[3][2]
            kind_of_name = self.types.get(name, "any")
            if bound is None or kind_of_name == "any":
                return None
            if node[1] == "==":
                return Guard(name, "eq", (bound,))
            if node[1] in (">", ">=", "<", "<=") and kind_of_name != "boolean":
                return Guard(name, "range", op=node[1], bound=bound)
        if (
            kind == "in"
            and node[1][0] == "col"
            and self.types.get(node[1][1], "any") != "any"
            and all(o[0] == "lit" for o in node[2])
        ):
            values = tuple(dict.fromkeys(o[2] for o in node[2] if o[2] is not None))
            if values:
                return Guard(node[1][1], "eq", values)
        return None

    def build(self, function_name: str) -> OnlineRules:
        trees = [lower(checked.tree) for checked in self.predicates]
        self._plan_memo(trees)
        items: list[Item] = []
        for index, tree in enumerate(trees):
            parts = tuple(Conjunct(c, self.guard(c), len(list(_walk(c)))) for c in conjuncts(tree))
            items.append((index, parts))
        body = self.block(items, 1)
        lines = [f"def {function_name}(row):", "    _get = row.get"]
        lines += [f"    {ident} = _get({name!r})" for name, ident in self.locals.items()]
        for name, nan in self.nan_locals.items():
            ident = self.locals[name]
            value = f"_float({ident})" if self.types.get(name) == "number" else ident
            lines.append(f"    {nan} = _NAN if {ident} is None else {value}")
        if self.memo:
            lines.append(f"    {' = '.join(self.memo.values())} = _U")
        lines += ["    _f = []", "    _fire = _f.append", *body]
        lines += ["    if len(_f) > 1:", "        _f.sort()", "    return _f"]
        source = "\n".join(lines) + "\n"
        namespace: dict[str, Any] = {
            "_U": _U,
            "_NAN": math.nan,
            "_float": float,
            "_mod": sql_mod,
            "_lower": sql_lower,
            "_upper": sql_upper,
            "_hour": sql_hour,
            "_dow": sql_dayofweek,
            "_least": sql_least,
            "_greatest": sql_greatest,
            "_in_list": _in_list,
            "__builtins__": {"abs": abs, "len": len},
            **self.constants,
        }
        code = compile(source, f"<rules {function_name}>", "exec")
        exec(code, namespace)  # generated from whitelisted trees only; see the module docstring
        self.stats["rules"] = len(trees)
        self.stats["names"] = len(self.locals)
        self.stats["shared_subexpressions"] = len(self.memo)
        self.stats["lines"] = len(lines)
        return OnlineRules(namespace[function_name], source, len(trees), dict(self.stats))

    def _plan_memo(self, trees: list[Node]) -> None:
        counts: Counter[Node] = Counter()
        for tree in trees:
            for node in _walk(tree):
                if node[0] in _VALUE_KINDS:
                    counts[node] += 1
        shared = [node for node, n in counts.most_common(MAX_MEMO) if n > 1]
        self.memo = {node: f"_m{i}" for i, node in enumerate(shared)}

    def block(self, items: list[Item], indent: int) -> list[str]:
        pad = "    " * indent
        lines: list[str] = []
        ready = [index for index, parts in items if not parts]
        if ready:
            lines.append(f"{pad}_fire({ready[0]})" if len(ready) == 1 else f"{pad}_f += {ready}")
        rest = [item for item in items if item[1]]
        while len(rest) > 1 and indent < MAX_INDENT:
            counts: Counter[tuple[str, str]] = Counter()
            for _, parts in rest:
                counts.update({(c.guard.name, c.guard.kind) for c in parts if c.guard})
            if not counts:
                break
            (name, kind), n = max(
                counts.items(), key=lambda kv: (kv[1], kv[0][1] == "eq", kv[0][0])
            )
            if n < 2:
                break
            members: list[tuple[Guard, Item]] = []
            others: list[Item] = []
            for index, parts in rest:
                chosen = _pick(parts, name, kind)
                if chosen is None:
                    others.append((index, parts))
                    continue
                remaining = tuple(c for c in parts if c is not chosen)
                assert chosen.guard is not None
                members.append((chosen.guard, (index, remaining)))
            rest = others
            if kind == "eq":
                lines += self.eq_group(name, members, indent)
            else:
                lines += self.range_group(name, members, indent)
        for index, parts in rest:
            lines += self.residual(index, parts, indent)
        return lines

    def residual(self, index: int, parts: tuple[Conjunct, ...], indent: int) -> list[str]:
        pad = "    " * indent
        ordered = sorted(parts, key=lambda c: (c.guard is None, c.cost))
        tests = " and ".join(self.true(c.node, 0) for c in ordered)
        self.stats["residual_tests"] += 1
        return [f"{pad}if {tests}:", f"{pad}    _fire({index})"]

    def eq_group(self, name: str, members: list[tuple[Guard, Item]], indent: int) -> list[str]:
        pad = "    " * indent
        ident = self.local(name)
        by_value: dict[Any, list[Item]] = {}
        for guard, item in members:
            for value in guard.values:
                by_value.setdefault(value, []).append(item)
        self.stats["eq_groups"] += 1
        values = list(by_value)
        is_boolean = self.types.get(name) == "boolean"
        if len(values) <= EQ_CHAIN_MAX or is_boolean:
            lines = []
            for i, value in enumerate(values):
                word = "if" if i == 0 else "elif"
                test = f"{ident} is {value!r}" if is_boolean else f"{ident} == {self.py(value)}"
                lines.append(f"{pad}{word} {test}:")
                lines += self.block(by_value[value], indent + 1)
            return lines
        table = self.const("D", {value: i for i, value in enumerate(values)})
        key = f"_k{indent}"
        lines = [f"{pad}{key} = {table}.get({ident})", f"{pad}if {key} is not None:"]
        lines += self._decision_tree(key, values, by_value, 0, len(values), indent + 1)
        return lines

    def _decision_tree(
        self,
        key: str,
        values: list[Any],
        by_value: dict[Any, list[Item]],
        low: int,
        high: int,
        indent: int,
    ) -> list[str]:
        pad = "    " * indent
        if high - low == 1:
            return self.block(by_value[values[low]], indent) or [f"{pad}pass"]
        if high - low == 2:
            return [
                f"{pad}if {key} == {low}:",
                *(self.block(by_value[values[low]], indent + 1) or [f"{pad}    pass"]),
                f"{pad}else:",
                *(self.block(by_value[values[low + 1]], indent + 1) or [f"{pad}    pass"]),
            ]
        middle = (low + high) // 2
        return [
            f"{pad}if {key} < {middle}:",
            *self._decision_tree(key, values, by_value, low, middle, indent + 1),
            f"{pad}else:",
            *self._decision_tree(key, values, by_value, middle, high, indent + 1),
        ]

    def range_group(self, name: str, members: list[tuple[Guard, Item]], indent: int) -> list[str]:
        numeric = self.types.get(name) in ("number", "integer")
        as_float = self.types.get(name) == "number"
        if numeric:  # NULL is NaN: every bound fails, no separate NULL test
            ident, indent = self.nan_local(name), indent - 1
            lines = []
        else:
            ident = self.local(name)
            lines = [f"{'    ' * indent}if {ident} is not None:"]
        self.stats["range_groups"] += 1
        for upward in (True, False):
            steps: dict[tuple[Any, str], list[Item]] = {}
            for guard, item in members:
                if (guard.op in (">", ">=")) == upward:
                    steps.setdefault((guard.bound, guard.op), []).append(item)
            # Each step implies the one before it, so the chain nests. Upward: ascending bounds,
            # >= before > at a tie (v > c implies v >= c); downward: descending, <= before <.
            rank = {">=": 0, ">": 1, "<": 0, "<=": 1}
            chain = sorted(steps, key=lambda step: (step[0], rank[step[1]]), reverse=not upward)
            for start in range(0, len(chain), CHAIN_DEPTH):
                depth = indent + 1
                for bound, op in chain[start : start + CHAIN_DEPTH]:
                    shown = self.py(_as_float(bound) if as_float else bound)
                    lines.append(f"{'    ' * depth}if {ident} {op} {shown}:")
                    lines += self.block(steps[(bound, op)], depth + 1)
                    depth += 1
        return lines


def _as_float(value: Any) -> Any:
    try:
        return float(value)
    except OverflowError:  # an integer beyond any float: compare it as it is
        return value


def _unless_null(null_test: str, expression: str) -> str:
    return f"(None if {null_test} else {expression})" if null_test else f"({expression})"


def _is_null(node: Node) -> bool:
    return node[0] == "lit" and node[2] is None


def _pick(parts: tuple[Conjunct, ...], name: str, kind: str) -> Conjunct | None:
    """The conjunct of a rule that serves as its guard on (name, kind): the narrowest one."""
    candidates = [
        part
        for part in parts
        if part.guard is not None and part.guard.name == name and part.guard.kind == kind
    ]
    return min(candidates, key=lambda p: len(p.guard.values) if p.guard else 0, default=None)
