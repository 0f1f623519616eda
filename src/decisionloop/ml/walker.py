"""A LightGBM model as generated Python: one straight-line tree walk per event, no library call.

``Booster.predict`` on one row costs a few hundred microseconds of ctypes and array set-up before
any tree is walked; the walk itself is a few comparisons per tree. :func:`compile_walker` reads
``booster.dump_model()`` and generates one function with every tree inlined as nested
``if``/``else`` (the way :mod:`decisionloop.rules.online` compiles rules), compiled once.

Exactly LightGBM's arithmetic (``Tree::NumericalDecision`` and ``GBDT::PredictRaw``):

* a feature value is a double; a NULL (missing name, ``None``) is NaN; a value with
  ``|v| <= 1e-35f`` is 0.0 (LightGBM's predictor keeps a dense row as its non-zero entries);
* ``missing_type`` ``None``: NaN is compared as 0.0; ``Zero``: NaN and ``|v| <= 1e-35f`` take the
  ``default_left`` branch; ``NaN``: NaN takes the ``default_left`` branch; every other value goes
  left when ``v <= threshold``. So NaN handling costs nothing at the node: ``not (v > t)`` sends
  NaN left, ``v <= t`` sends it right;
* the raw score is ``0.0`` plus each tree's leaf value in tree order (the same additions, so the
  same double); ``binary`` turns it into ``1 / (1 + exp(-sigmoid * raw))``.

Models the walker does not cover (categorical splits, linear trees, multiclass, other objectives,
trees deeper than Python's indentation allows) raise :class:`UnsupportedModelError`; the caller
keeps ``Booster.predict`` for them.

**Contributions** are per-path (Saabas): each split on the event's path credits its feature with
the change of the expected value from the node to the child taken; a node's expected value is the
hessian-weighted mean of its leaves (recomputed here from the leaves at full precision, since the
dump prints internal values to six digits). Per tree the credits telescope to ``leaf - root``, so
``bias + sum(contributions) == raw`` (``bias``: the sum of the roots' values) up to rounding. Why
Saabas and not TreeSHAP (``pred_contrib=True``): the path is already walked, so the credits are a
few precomputed additions per leaf — microseconds, where TreeSHAP costs more than the prediction —
and an investigator reads them the same way ("this feature pushed the score up by so much").
Their known bias (splits near the root get more credit) is acceptable for ranking reasons.

The credits of the leaves taken are added so that the GIL is rarely given away: the walk
returns each tree's leaf, the leaves' credit rows are joined as bytes and summed by ``np.dot``
with a vector of ones. ``ndarray.take``, fancy indexing and large reductions release the GIL for
their loops, and
in a service where another thread is busy (the source loader, the case store, a monitoring run)
getting it back costs up to the interpreter's switch interval, 5 ms: beside one busy thread,
every scoring with contributions stalled that way (8.7 ms on average for the top three, against
0.10 ms alone). ``np.dot`` releases it only around a BLAS call of a few microseconds, which a
waiting thread rarely catches: 12 of 1,500 scorings beside a busy thread took over 1 ms (the
walk alone: 2). Adding the credits in plain Python (no numpy) never releases it but took
0.35 ms more per event; generating the additions into the walk doubled the generated code and
cost 90 µs more per event in the decision loop (cache misses). Neither was kept.

Safety: the source is ours; feature names reach it only as ``repr()`` of strings and numbers as
``repr()`` of floats.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["UnsupportedModelError", "Walker", "compile_walker"]

Row = Mapping[str, Any]
# LightGBM's kZeroThreshold: the float 1e-35f, compared as a double.
ZERO_THRESHOLD = float(np.float32(1e-35))
MAX_DEPTH = 80  # Python allows 100 indentation levels; the prologue and function take a few


class UnsupportedModelError(Exception):
    """A model the walker cannot reproduce exactly; serve it with ``Booster.predict``."""


@dataclass(frozen=True)
class Walker:
    """The generated functions of one model.

    ``raw(row)``: the raw score (log-odds for ``binary``); :meth:`explain`: the same raw score and
    each feature's contribution; ``transform``: raw score -> probability.
    """

    feature_names: tuple[str, ...]
    raw: Callable[[Row], float]
    walk: Callable[[Row], tuple[float, tuple[int, ...]]]  # raw score and the leaf of each tree
    leaf_credits: list[bytes]  # per leaf: each feature's credit along its path, float64 bytes
    trees: np.ndarray  # ones, one per tree: np.dot adds up the rows of the leaves taken
    transform: Callable[[float], float]
    bias: float
    source: str

    def predict(self, row: Row) -> float:
        return self.transform(self.raw(row))

    def explain(self, row: Row) -> tuple[float, list[float]]:
        """The raw score and each feature's contribution (``bias + sum == raw``), in
        ``feature_names`` order (how they are added: see the module's docstring)."""
        raw, leaves = self.walk(row)
        rows = self.leaf_credits
        taken = np.frombuffer(b"".join([rows[leaf] for leaf in leaves]), dtype=np.float64)
        credits = np.dot(self.trees, taken.reshape(len(leaves), len(self.feature_names)))
        return raw, credits.tolist()


def compile_walker(dump: Mapping[str, Any]) -> Walker:
    """Generate and compile the walker of a ``Booster.dump_model()`` document."""
    if dump.get("num_class", 1) != 1 or dump.get("num_tree_per_iteration", 1) != 1:
        raise UnsupportedModelError("multiclass models")
    if dump.get("average_output"):
        raise UnsupportedModelError("random-forest (averaged) models")
    transform = _transform(str(dump.get("objective", "")))
    names = tuple(str(n) for n in dump["feature_names"])
    if any(info.get("num_cat", 0) for info in dump["tree_info"]):
        raise UnsupportedModelError("categorical splits")
    generator = _Generator(names, [info["tree_structure"] for info in dump["tree_info"]])
    source = generator.source()
    namespace: dict[str, Any] = {"_nan": math.nan, "_ZERO": ZERO_THRESHOLD}
    exec(compile(source, "<decisionloop.ml.walker>", "exec"), namespace)  # see module docstring
    rows = []
    for credits in generator.leaf_credits:
        row = np.zeros(len(names))
        for feature, credit in credits.items():
            row[feature] = credit
        rows.append(row.tobytes())
    return Walker(
        feature_names=names,
        raw=namespace["_raw"],
        walk=namespace["_explain"],
        leaf_credits=rows,
        trees=np.ones(len(generator.trees)),
        transform=transform,
        bias=generator.bias,
        source=source,
    )


def _transform(objective: str) -> Callable[[float], float]:
    kind, _, options = objective.partition(" ")
    if kind in ("regression", "regression_l2", "huber", "fair", "quantile", "mape"):
        return float
    if kind != "binary":
        raise UnsupportedModelError(f"objective {objective!r}")
    sigmoid = 1.0
    for option in options.split():
        if option.startswith("sigmoid:"):
            sigmoid = float(option.removeprefix("sigmoid:"))

    def probability(raw: float) -> float:
        return 1.0 / (1.0 + math.exp(-sigmoid * raw))

    return probability


def _node_values(node: Mapping[str, Any]) -> tuple[float, float]:
    """(expected value, hessian weight) of a subtree, from its leaves."""
    if "leaf_value" in node:
        return float(node["leaf_value"]), float(node.get("leaf_weight", 0.0))
    left, left_weight = _node_values(node["left_child"])
    right, right_weight = _node_values(node["right_child"])
    weight = left_weight + right_weight
    if weight <= 0.0:
        return (left + right) / 2.0, 0.0
    return (left * left_weight + right * right_weight) / weight, weight


class _Generator:
    def __init__(self, names: Sequence[str], trees: Sequence[Mapping[str, Any]]) -> None:
        self.names = names
        self.trees = trees
        self.used: set[int] = set()
        self.zero: set[int] = set()  # features with missing_type Zero: need m<i>
        self.none: set[int] = set()  # features with missing_type None: need z<i>
        self.bias = 0.0
        # Per leaf (numbered in generation order): the credits of its path, by feature.
        self.leaf_credits: list[dict[int, float]] = []
        self._path: dict[int, float] = {}
        self._values: list[float] = []
        self._tree = 0
        self._scan()

    def _scan(self) -> None:
        for tree in self.trees:
            self.bias += _node_values(tree)[0]
            stack = [(tree, 0)]
            while stack:
                node, depth = stack.pop()
                if "leaf_value" in node:
                    if node.get("leaf_coeff"):
                        raise UnsupportedModelError("linear trees")
                    continue
                if depth > MAX_DEPTH:
                    raise UnsupportedModelError(f"a tree deeper than {MAX_DEPTH} levels")
                if node.get("decision_type", "<=") != "<=":
                    raise UnsupportedModelError(f"decision type {node.get('decision_type')!r}")
                feature = int(node["split_feature"])
                self.used.add(feature)
                missing = node.get("missing_type", "None")
                if missing == "Zero":
                    self.zero.add(feature)
                elif missing in ("None", None):
                    self.none.add(feature)
                elif missing != "NaN":
                    raise UnsupportedModelError(f"missing type {missing!r}")
                stack.extend(((node["left_child"], depth + 1), (node["right_child"], depth + 1)))

    def source(self) -> str:
        prologue = []
        for i in sorted(self.used):
            prologue.append(f"    x{i} = get({self.names[i]!r})")
            prologue.append(f"    x{i} = _nan if x{i} is None else float(x{i})")
            prologue.append(f"    if -_ZERO <= x{i} <= _ZERO: x{i} = 0.0")
            if i in self.zero:
                prologue.append(f"    m{i} = x{i} != x{i} or x{i} == 0.0")
            if i in self.none:
                prologue.append(f"    z{i} = 0.0 if x{i} != x{i} else x{i}")
        raw = ["def _raw(row):", "    get = row.get", *prologue, "    s = 0.0"]
        explain = ["def _explain(row):", "    get = row.get", *prologue, "    s = 0.0"]
        for index, tree in enumerate(self.trees):
            self._tree = index
            self._values = [_node_values(tree)[0]]
            self._emit(tree, 1, raw, explain)
        raw.append("    return s")
        # The leaf taken in each tree travels in a local t<tree>: no call per tree.
        leaves = "".join(f"t{i}, " for i in range(len(self.trees)))
        explain.append(f"    return s, ({leaves})")
        return "\n".join([*raw, "", *explain, ""])

    def _emit(
        self, node: Mapping[str, Any], depth: int, raw: list[str], explain: list[str]
    ) -> None:
        pad = "    " * depth
        if "leaf_value" in node:
            raw.append(f"{pad}s += {float(node['leaf_value'])!r}")
            explain.append(f"{pad}s += {float(node['leaf_value'])!r}")
            explain.append(f"{pad}t{self._tree} = {len(self.leaf_credits)}")
            self.leaf_credits.append(dict(self._path))
            return
        feature = int(node["split_feature"])
        test, left_first = self._test(node)
        first, second = (
            (node["left_child"], node["right_child"])
            if left_first
            else (node["right_child"], node["left_child"])
        )
        value = self._values[-1]
        for line, child in ((f"{pad}if {test}:", first), (f"{pad}else:", second)):
            raw.append(line)
            explain.append(line)
            child_value = _node_values(child)[0]
            before = self._path.get(feature, 0.0)
            self._path[feature] = before + (child_value - value)
            self._values.append(child_value)
            self._emit(child, depth + 1, raw, explain)
            self._values.pop()
            self._path[feature] = before

    def _test(self, node: Mapping[str, Any]) -> tuple[str, bool]:
        """A condition and whether it sends the event left (else right). Plain ``x > t`` tests
        (no ``not``) keep CPython's fused float compare-and-jump."""
        i = int(node["split_feature"])
        threshold = repr(float(node["threshold"]))
        left = bool(node.get("default_left", False))
        missing = node.get("missing_type", "None")
        if missing == "Zero":
            if left:
                return f"m{i} or x{i} <= {threshold}", True
            return f"not m{i} and x{i} <= {threshold}", True
        if missing == "NaN":
            # NaN > t and NaN <= t are both false: NaN lands in the else branch.
            return (f"x{i} > {threshold}", False) if left else (f"x{i} <= {threshold}", True)
        return f"z{i} <= {threshold}", True
