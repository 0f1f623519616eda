"""Vectorized rule evaluation over a table of events: the backtest path.

``select_sql`` (:mod:`decisionloop.rules.sql`) gives one SELECT with a boolean column per rule,
which is what Spark gets. DuckDB plans such a projection in time growing with the square of its
width (about 1 s for 1,000 rule columns, far more for 5,000), so for DuckDB the rules are instead
taken apart, as the online compiler takes them apart:

1. Each rule's **boolean skeleton** (``AND``, ``OR``, ``NOT``) is separated from its **atoms**,
   the predicates below it (comparisons, ``IN``, ``LIKE``, ``IS NULL``, ``CASE`` ...). Atoms are
   deduplicated across rules by their generated SQL: ``amount > 1000`` is computed once for all
   the rules that test it.
2. DuckDB evaluates the atoms, in SELECTs of bounded width, as the generated SQL (so every
   semantic rewrite of :mod:`decisionloop.rules.sql` applies). Arrow hands each boolean column
   back as two bitmaps, values and validity, one bit per event: "is TRUE" is values & validity,
   "is FALSE" is ~values & validity (computed only where a ``NOT`` or ``OR`` above needs it).
   Atoms that compare one column with literals (``amount > 1000``, ``channel IN (...)``, a
   boolean column) are instead evaluated with numpy on the fetched column, where the operand
   types make that exactly DuckDB's comparison (``_Column.compare`` says when): DuckDB spends
   about 0.2 ms planning each such expression, which is most of a backtest over a small table.
3. The skeleton is evaluated on those bitmaps with numpy, in SQL's three-valued logic:
   TRUE(a AND b) = T(a) & T(b), FALSE(a AND b) = F(a) | F(b), TRUE(a OR b) = T(a) | T(b),
   FALSE(a OR b) = F(a) & F(b), TRUE(NOT a) = F(a), FALSE(NOT a) = T(a); NULL is neither.

The result keeps, per rule, the bitmap of events where it is TRUE (and, when asked, where it is
FALSE): hits are population counts, a rule's column is one unpacking away.
"""

from __future__ import annotations

import operator
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from sqlglot import exp

from decisionloop.rules.expressions import Checked
from decisionloop.rules.sql import sql_tree

ATOMS_PER_QUERY = 128  # DuckDB's planning grows with the square of a projection's width
BLOCK_BYTES = 2048  # events per block of the bit program / 8
Skeleton = tuple[Any, ...]  # ("atom", i) | ("and", a, b) | ("or", a, b) | ("not", a)
Bits = np.ndarray  # packed little-endian bits, one per event (numpy.packbits(bitorder="little"))


@dataclass(frozen=True)
class Direct:
    """``column <op> literal`` (or a boolean column alone: ``op`` is None), with ``column`` the
    SQL that selects it. Evaluated by Arrow compute when the column's Arrow type makes that
    exactly DuckDB's comparison (see ``_direct``); otherwise the atom's SQL runs as usual."""

    column: str
    op: str | None = None  # a comparison, "in", or None for a boolean column
    literal: int | float | str | tuple[int | float | str, ...] | None = None


_FLIPPED = {">": "<", ">=": "<=", "<": ">", "<=": ">=", "=": "=", "<>": "<>"}
_COMPARISONS: dict[type[exp.Expression], str] = {
    exp.GT: ">",
    exp.GTE: ">=",
    exp.LT: "<",
    exp.LTE: "<=",
    exp.EQ: "=",
    exp.NEQ: "<>",
}
EXACT_FLOAT_INT = 2**53  # integers a double holds exactly


def _literal(node: exp.Expression) -> int | float | str | None:
    """The Python value of a literal (a number, a string, or a number cast to DOUBLE)."""
    if isinstance(node, exp.Cast) and node.to.this == exp.DataType.Type.DOUBLE:
        inner = node.this
        if isinstance(inner, exp.Literal) and not inner.is_string:
            return float(inner.this)
        return None
    if not isinstance(node, exp.Literal):
        return None
    if node.is_string:
        return str(node.this)
    text = str(node.this)
    return int(text) if text.lstrip("-").isdigit() else float(text)


def _direct_form(node: exp.Expression) -> Direct | None:
    if isinstance(node, exp.Column):
        return Direct(node.sql(dialect="duckdb"))
    if (
        isinstance(node, exp.In)
        and isinstance(node.this, exp.Column)
        and not node.args.get("query")
    ):
        values = [_literal(item) for item in node.expressions]
        if not values or any(v is None for v in values):
            return None  # a NULL in the list makes a miss NULL, not FALSE: left to the SQL
        return Direct(
            node.this.sql(dialect="duckdb"), "in", tuple(v for v in values if v is not None)
        )
    op = _COMPARISONS.get(type(node))
    if op is None:
        return None
    left, right = node.this, node.expression
    if isinstance(right, exp.Column):
        left, right, op = right, left, _FLIPPED[op]
    if not isinstance(left, exp.Column):
        return None
    value = _literal(right)
    return None if value is None else Direct(left.sql(dialect="duckdb"), op, value)


@dataclass
class Plan:
    """Rules taken apart: shared atoms (SQL text), and a straight-line program of bit operations.

    Slot ``i < len(inputs)`` holds atom ``inputs[i][0]`` in polarity ``inputs[i][1]`` (TRUE or
    FALSE); slot ``len(inputs) + j`` holds ``ops[j]``: ``(both, a, b)`` is ``a & b`` when
    ``both`` else ``a | b``. Equal sub-skeletons share one slot, whatever rules they are in.
    """

    rule_ids: list[str]
    atoms: list[str]
    skeletons: list[Skeleton]
    inputs: list[tuple[int, bool]]
    ops: list[tuple[bool, int, int]]
    true_roots: list[int]
    false_roots: list[int] | None = None
    # Atoms simple enough to evaluate on the Arrow column itself (see ``Direct``), by atom.
    direct: dict[int, Direct] = field(default_factory=dict)
    # The ops grouped into vectorized steps: every op of a step reads only slots of earlier
    # steps; (both, target slots, left slots, right slots).
    steps: list[tuple[bool, np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.steps or not self.ops:
            return
        n_inputs = len(self.inputs)
        level = [0] * (n_inputs + len(self.ops))
        groups: dict[tuple[int, bool], list[int]] = {}
        for j, (both, a, b) in enumerate(self.ops):
            slot = n_inputs + j
            level[slot] = 1 + max(level[a], level[b])
            groups.setdefault((level[slot], both), []).append(j)
        for (_, both), members in sorted(groups.items()):
            targets = np.array([n_inputs + j for j in members], dtype=np.intp)
            lefts = np.array([self.ops[j][1] for j in members], dtype=np.intp)
            rights = np.array([self.ops[j][2] for j in members], dtype=np.intp)
            self.steps.append((both, targets, lefts, rights))

    @property
    def needs(self) -> set[tuple[int, bool]]:
        """The (atom, polarity) pairs the program reads."""
        return set(self.inputs)


def plan(rules: Sequence[tuple[str, Checked]], three_valued: bool = False) -> Plan:
    """Split every rule into its skeleton over deduplicated atoms (DuckDB SQL), and compile the
    skeletons into one program of bit operations."""
    atoms: dict[str, int] = {}
    direct: dict[int, Direct] = {}

    def split(node: exp.Expression) -> Skeleton:
        while isinstance(node, exp.Paren):
            node = node.this
        if isinstance(node, exp.And | exp.Or):
            kind = "and" if isinstance(node, exp.And) else "or"
            return (kind, split(node.this), split(node.expression))
        if isinstance(node, exp.Not):
            return ("not", split(node.this))
        if isinstance(node, exp.Like | exp.ILike) and node.args.get("negate"):
            plain = node.copy()
            plain.set("negate", None)
            return ("not", split(plain))
        text = node.sql(dialect="duckdb")
        index = atoms.setdefault(text, len(atoms))
        form = _direct_form(node)
        if form is not None:
            direct[index] = form
        return ("atom", index)

    skeletons = [split(sql_tree(checked, "duckdb")) for _, checked in rules]
    needs: set[tuple[int, bool]] = set()
    for skeleton in skeletons:
        _needs(skeleton, True, needs)
        if three_valued:
            _needs(skeleton, False, needs)
    inputs = sorted(needs)
    slot_of: dict[Any, int] = {key: i for i, key in enumerate(inputs)}
    ops: list[tuple[bool, int, int]] = []

    def emit(node: Skeleton, polarity: bool) -> int:
        kind = node[0]
        if kind == "atom":
            return slot_of[(node[1], polarity)]
        if kind == "not":
            return emit(node[1], not polarity)
        left, right = emit(node[1], polarity), emit(node[2], polarity)
        # TRUE of AND and FALSE of OR need both; TRUE of OR and FALSE of AND need either.
        both = (kind == "and") == polarity
        key = ("op", both, min(left, right), max(left, right))
        slot = slot_of.get(key)
        if slot is None:
            slot = slot_of[key] = len(inputs) + len(ops)
            ops.append((both, left, right))
        return slot

    true_roots = [emit(skeleton, True) for skeleton in skeletons]
    false_roots = [emit(skeleton, False) for skeleton in skeletons] if three_valued else None
    return Plan(
        [rule_id for rule_id, _ in rules],
        list(atoms),
        skeletons,
        inputs,
        ops,
        true_roots,
        false_roots,
        direct=direct,
    )


def _needs(node: Skeleton, polarity: bool, out: set[tuple[int, bool]]) -> None:
    kind = node[0]
    if kind == "atom":
        out.add((node[1], polarity))
    elif kind == "not":
        _needs(node[1], not polarity, out)
    else:
        _needs(node[1], polarity, out)
        _needs(node[2], polarity, out)


@dataclass
class RuleBits:
    """Per rule, the events where it is TRUE (and FALSE, when evaluated three-valued)."""

    rule_ids: list[str]
    events: int
    true: np.ndarray  # (rules, bytes) uint8
    false: np.ndarray | None = None

    def hits(self) -> np.ndarray:
        """Events on which each rule is TRUE."""
        return np.asarray(np.bitwise_count(self.true).sum(axis=1, dtype=np.int64))

    def column(self, rule: int) -> np.ndarray:
        """The rule's TRUE column: one bool per event."""
        return np.unpackbits(self.true[rule], count=self.events, bitorder="little").astype(bool)

    def values(self, rule: int) -> list[bool | None]:
        """The rule's three-valued result per event (needs ``three_valued=True``)."""
        if self.false is None:
            raise ValueError("evaluated for TRUE only; pass three_valued=True")
        is_true = self.column(rule)
        is_false = np.unpackbits(self.false[rule], count=self.events, bitorder="little")
        return [True if t else False if f else None for t, f in zip(is_true, is_false, strict=True)]

    def fired(self) -> list[list[int]]:
        """Per event, the indices of the rules that are TRUE (rule order)."""
        matrix = np.unpackbits(self.true, axis=1, count=self.events, bitorder="little")
        rows, events = np.nonzero(matrix.T)
        fired: list[list[int]] = [[] for _ in range(self.events)]
        for event, rule in zip(rows.tolist(), events.tolist(), strict=True):
            fired[event].append(rule)
        return fired


def evaluate(
    con: Any,
    table: str,
    rules: Sequence[tuple[str, Checked]] | Plan,
    three_valued: bool = False,
    threads: int | None = None,
) -> RuleBits:
    """Evaluate every rule over every row of ``table`` on the DuckDB connection ``con``.

    The atom queries run on ``threads`` cursors at once (default: one per CPU), since DuckDB
    plans each query on one thread; a table only ``con`` sees (a registered Arrow table, a
    temporary table) is read by ``con`` alone.
    """
    if isinstance(rules, Plan):
        prepared = rules
        if three_valued and prepared.false_roots is None:
            raise ValueError("the plan was made for TRUE only; plan(..., three_valued=True)")
    else:
        prepared = plan(rules, three_valued)
    inputs = prepared.inputs
    position = {key: i for i, key in enumerate(inputs)}
    needed = sorted({atom for atom, _ in inputs})
    quoted = exp.to_identifier(table, quoted=True).sql(dialect="duckdb")
    # Planning dominates DuckDB's time on simple atoms (about 0.2 ms each, measured: 100 of the
    # 135 ms that 499 atoms over 10,000 events took); comparisons of a column with a literal are
    # evaluated on the fetched Arrow column instead, where that is exactly DuckDB's comparison.
    evaluated = _evaluate_direct(con, quoted, prepared.direct, needed)
    needed = [atom for atom in needed if atom not in evaluated]
    events = -1
    bitmaps: np.ndarray | None = None
    chunks = [needed[i : i + ATOMS_PER_QUERY] for i in range(0, len(needed), ATOMS_PER_QUERY)]
    queries = [
        f"SELECT {', '.join(f'{prepared.atoms[a]} AS c{i}' for i, a in enumerate(chunk))} "
        f"FROM {quoted}"
        for chunk in chunks
    ]
    results = _run_queries(con, queries, threads or os.cpu_count() or 1)
    if results:
        events = results[0].num_rows
    elif evaluated:
        events = _row_count(con, quoted)
    columns = [
        *evaluated.items(),
        *(
            (atom, _bitmaps(column, events))
            for chunk, result in zip(chunks, results, strict=True)
            for atom, column in zip(chunk, result.columns, strict=True)
        ),
    ]
    if columns:
        bitmaps = np.empty((len(inputs), (events + 7) // 8), dtype=np.uint8)
        everything = _all_events(events)
        for atom, (values, valid) in columns:
            if valid is None:
                valid = everything
            if (atom, True) in position:
                np.bitwise_and(values, valid, out=bitmaps[position[(atom, True)]])
            if (atom, False) in position:
                np.bitwise_and(~values, valid, out=bitmaps[position[(atom, False)]])
    if bitmaps is None:  # no atoms at all: count the rows
        events = _row_count(con, quoted)
        bitmaps = np.empty((0, (events + 7) // 8), dtype=np.uint8)
    true, false = _run(prepared, bitmaps)
    return RuleBits(prepared.rule_ids, events, true, false if three_valued else None)


def _evaluate_direct(
    con: Any, quoted: str, direct: dict[int, Direct], needed: list[int]
) -> dict[int, tuple[Bits, Bits | None]]:
    """The needed direct atoms that can be evaluated exactly on their column with numpy, as
    (value bits, validity bits or None). The columns are fetched in one SELECT."""
    wanted = [atom for atom in needed if atom in direct]
    if not wanted:
        return {}
    names = sorted({direct[atom].column for atom in wanted})
    fetched = con.sql(f"SELECT {', '.join(names)} FROM {quoted}").to_arrow_table()
    columns = {name: _Column.of(c) for name, c in zip(names, fetched.columns, strict=True)}
    evaluated: dict[int, tuple[Bits, Bits | None]] = {}
    for atom in wanted:
        form = direct[atom]
        column = columns[form.column]
        if column is None:
            continue
        hits = column.compare(form)
        if hits is not None:
            evaluated[atom] = (np.packbits(hits, bitorder="little"), column.valid)
    return evaluated


@dataclass
class _Column:
    """One fetched column as numpy: numbers as float64 or int64, text as dictionary codes."""

    kind: str  # "float" | "int" | "text" | "bool"
    values: np.ndarray
    valid: Bits | None  # packed, None when no NULLs
    words: list[str] = field(default_factory=list)  # text: the dictionary

    @classmethod
    def of(cls, chunked: pa.ChunkedArray) -> _Column | None:
        array = chunked.combine_chunks()
        kind = array.type
        valid = None
        if array.null_count:
            valid = np.packbits(
                pc.is_valid(array).to_numpy(zero_copy_only=False), bitorder="little"
            )
        if pa.types.is_float64(kind):
            values = pc.fill_null(array, 0.0).to_numpy(zero_copy_only=False)
            if np.isnan(values).any():  # DuckDB orders NaN above every number; IEEE does not
                return None
            return cls("float", values, valid)
        if pa.types.is_signed_integer(kind):
            values = pc.fill_null(array, 0).to_numpy(zero_copy_only=False).astype(np.int64)
            return cls("int", values, valid)
        if pa.types.is_string(kind) or pa.types.is_large_string(kind):
            encoded = pc.dictionary_encode(array)
            codes = pc.fill_null(encoded.indices, 0).to_numpy(zero_copy_only=False)
            return cls("text", codes, valid, encoded.dictionary.to_pylist())
        if pa.types.is_boolean(kind):
            return cls("bool", pc.fill_null(array, False).to_numpy(zero_copy_only=False), valid)
        return None

    def compare(self, form: Direct) -> np.ndarray | None:
        """Where ``column <op> literal`` is TRUE among valid rows (NULL rows: masked by
        validity), exactly as DuckDB compares: only same-family operands, doubles with numbers
        a double holds exactly, text by code point (the order of UTF-8 bytes)."""
        if form.op is None:
            return self.values if self.kind == "bool" else None
        literals: tuple[Any, ...] = (
            form.literal if isinstance(form.literal, tuple) else (form.literal,)
        )
        if not all(self._accepts(v) for v in literals):
            return None
        if self.kind == "text":  # decide on the dictionary, then look each row's code up
            words = self.words
            if form.op == "in":
                table = np.array([w in literals for w in words], dtype=bool)
            else:
                test = _PY_OPS[form.op]
                table = np.array([test(w, literals[0]) for w in words], dtype=bool)
            return table[self.values] if len(table) else np.zeros(len(self.values), dtype=bool)
        if form.op == "in":
            return np.isin(self.values, np.array(literals, dtype=self.values.dtype))
        result: np.ndarray = _NP_OPS[form.op](self.values, literals[0])
        return result

    def _accepts(self, value: Any) -> bool:
        if self.kind == "float":
            return isinstance(value, float) or (
                isinstance(value, int) and abs(value) < EXACT_FLOAT_INT
            )
        if self.kind == "int":
            return isinstance(value, int) and -(2**63) <= value < 2**63
        return self.kind == "text" and isinstance(value, str)


_NP_OPS = {
    ">": np.greater,
    ">=": np.greater_equal,
    "<": np.less,
    "<=": np.less_equal,
    "=": np.equal,
    "<>": np.not_equal,
}
_PY_OPS = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "=": operator.eq,
    "<>": operator.ne,
}


def _row_count(con: Any, quoted: str) -> int:
    return int(con.sql(f"SELECT count(*) FROM {quoted}").fetchall()[0][0])


def _run_queries(con: Any, queries: list[str], threads: int) -> list[pa.Table]:
    """Run on parallel cursors when the table is visible to them; a table registered on or
    temporary to ``con`` is not, and then the queries run one after another on ``con``."""
    if threads > 1 and len(queries) > 1:

        def run(query: str) -> pa.Table:
            cursor = con.cursor()
            try:
                return cursor.sql(query).to_arrow_table()
            finally:
                cursor.close()

        try:
            with ThreadPoolExecutor(min(threads, len(queries))) as pool:
                return list(pool.map(run, queries))
        except duckdb.CatalogException:
            return _run_serially(con, queries)
    return _run_serially(con, queries)


def _run_serially(con: Any, queries: list[str]) -> list[pa.Table]:
    return [con.sql(query).to_arrow_table() for query in queries]


def _run(prepared: Plan, bitmaps: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Run the plan's bit program over the input bitmaps, a block of events at a time (the
    intermediate slots of a block stay small enough to be cache friendly)."""
    width = bitmaps.shape[1]
    n_inputs = len(prepared.inputs)
    true = np.empty((len(prepared.true_roots), width), dtype=np.uint8)
    false_roots = prepared.false_roots
    false = np.empty((len(false_roots), width), dtype=np.uint8) if false_roots else None
    block = min(width, BLOCK_BYTES) or 1
    slots = np.empty((n_inputs + len(prepared.ops), block), dtype=np.uint8)
    for start in range(0, width, block):
        stop = min(start + block, width)
        view = slots[:, : stop - start]
        view[:n_inputs] = bitmaps[:, start:stop]
        for both, targets, lefts, rights in prepared.steps:
            ufunc = np.bitwise_and if both else np.bitwise_or
            view[targets] = ufunc(view[lefts], view[rights])
        true[:, start:stop] = view[prepared.true_roots]
        if false is not None and false_roots:
            false[:, start:stop] = view[false_roots]
    return true, false


def _all_events(events: int) -> Bits:
    bits = np.full((events + 7) // 8, 0xFF, dtype=np.uint8)
    if events % 8:
        bits[-1] = (1 << (events % 8)) - 1
    return bits


def _bitmaps(column: pa.ChunkedArray, events: int) -> tuple[Bits, Bits | None]:
    """An Arrow boolean column as packed value bits and validity bits (None: no NULLs), with the
    bits past the last event cleared."""
    array = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    if array.type == pa.null():  # an untyped NULL column: every event NULL
        empty = np.zeros((events + 7) // 8, dtype=np.uint8)
        return empty, empty
    width = (events + 7) // 8
    if array.offset % 8:
        values = np.packbits(
            pc.fill_null(array, False).to_numpy(zero_copy_only=False), bitorder="little"
        )
        valid = None
        if array.null_count:
            mask = pc.is_valid(array).to_numpy(zero_copy_only=False)
            valid = np.packbits(mask, bitorder="little")
    else:
        start = array.offset // 8
        validity, data = array.buffers()[:2]
        values = np.frombuffer(data, dtype=np.uint8, count=start + width)[start:].copy()
        valid = None
        if validity is not None and array.null_count:
            valid = np.frombuffer(validity, dtype=np.uint8, count=start + width)[start:].copy()
    if events % 8:
        values[-1] &= (1 << (events % 8)) - 1
        if valid is not None:
            valid[-1] &= (1 << (events % 8)) - 1
    return values, valid
