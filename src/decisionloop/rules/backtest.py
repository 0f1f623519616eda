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
3. The skeleton is evaluated on those bitmaps with numpy, in SQL's three-valued logic:
   TRUE(a AND b) = T(a) & T(b), FALSE(a AND b) = F(a) | F(b), TRUE(a OR b) = T(a) | T(b),
   FALSE(a OR b) = F(a) & F(b), TRUE(NOT a) = F(a), FALSE(NOT a) = T(a); NULL is neither.

The result keeps, per rule, the bitmap of events where it is TRUE (and, when asked, where it is
FALSE): hits are population counts, a rule's column is one unpacking away.
"""

from __future__ import annotations

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
        return ("atom", atoms.setdefault(text, len(atoms)))

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
    events = -1
    bitmaps: np.ndarray | None = None
    chunks = [needed[i : i + ATOMS_PER_QUERY] for i in range(0, len(needed), ATOMS_PER_QUERY)]
    queries = [
        f"SELECT {', '.join(f'{prepared.atoms[a]} AS c{i}' for i, a in enumerate(chunk))} "
        f"FROM {quoted}"
        for chunk in chunks
    ]
    results = _run_queries(con, queries, threads or os.cpu_count() or 1)
    for chunk, result in zip(chunks, results, strict=True):
        if bitmaps is None:
            events = result.num_rows
            bitmaps = np.empty((len(inputs), (events + 7) // 8), dtype=np.uint8)
            everything = _all_events(events)
        for atom, column in zip(chunk, result.columns, strict=True):
            values, valid = _bitmaps(column, events)
            if valid is None:
                valid = everything
            if (atom, True) in position:
                np.bitwise_and(values, valid, out=bitmaps[position[(atom, True)]])
            if (atom, False) in position:
                np.bitwise_and(~values, valid, out=bitmaps[position[(atom, False)]])
    if bitmaps is None:  # no atoms at all: count the rows
        events = int(con.sql(f"SELECT count(*) FROM {quoted}").fetchall()[0][0])
        bitmaps = np.empty((0, (events + 7) // 8), dtype=np.uint8)
    true, false = _run(prepared, bitmaps)
    return RuleBits(prepared.rule_ids, events, true, false if three_valued else None)


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
