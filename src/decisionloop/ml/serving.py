"""Scoring one event inside the decision path.

:func:`load_scorer` turns a registered model into a :class:`Scorer`:

* LightGBM models are served by the generated tree walker (:mod:`decisionloop.ml.walker`) when it
  reproduces ``Booster.predict`` *exactly* — checked at load on :data:`VERIFY_ROWS` rows drawn
  around each feature's training range, with NaN and zeros mixed in. ``benchmarks/models.py``
  measures both forms: the walker scores a 200-tree model several times faster than
  ``Booster.predict`` on one row, and yields its contributions at no extra walk. A model the
  walker cannot reproduce falls back to ``Booster.predict`` (contributions by LightGBM's
  ``pred_contrib``, TreeSHAP).
* scikit-learn models are served by ``predict_proba`` on one row, without contributions.

:class:`StrategyModels` holds the models a strategy lists (active and shadow; retired ones are not
loaded). A model that cannot be loaded (missing artifact, features the project no longer defines)
or that raises while scoring is *degraded*: the decision goes on without it, with a ``model``
reason saying so (``values.degraded``), and the engine counts it. A model never fails a decision.
"""

from __future__ import annotations

import heapq
import logging
import math
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from decisionloop.domain.decisions import Reason
from decisionloop.errors import DecisionLoopError
from decisionloop.ml.registry import ModelRegistry, ModelVersion
from decisionloop.ml.walker import UnsupportedModelError, compile_walker
from decisionloop.project.definitions import ModelRefSpec

log = logging.getLogger(__name__)

__all__ = [
    "VERIFY_ROWS",
    "BoosterScorer",
    "Scored",
    "Scorer",
    "StrategyModels",
    "WalkerScorer",
    "load_scorer",
    "verification_rows",
]

VERIFY_ROWS = 512
Row = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Scored:
    probability: float
    contributions: list[tuple[str, float]]  # (feature, contribution to the raw score), top first


class Scorer(Protocol):
    @property
    def form(self) -> str: ...  # "walker" | "booster" | "sklearn"

    @property
    def feature_names(self) -> Sequence[str]: ...

    def score(self, row: Row, top: int) -> Scored: ...


def _top(names: Sequence[str], credits: Sequence[float], top: int) -> list[tuple[str, float]]:
    """The ``top`` largest contributions by magnitude, ties in feature order; zeros left out.
    Plain Python on purpose: numpy's sort releases the GIL (see :mod:`decisionloop.ml.walker`)."""
    if top <= 0:
        return []

    def magnitude(i: int) -> float:  # NaN last, as the earlier argsort ranked it
        credit = credits[i]
        return abs(credit) if credit == credit else -math.inf

    order = heapq.nlargest(top, range(len(credits)), key=magnitude)
    return [(names[i], float(credits[i])) for i in order if credits[i] != 0.0]


class WalkerScorer:
    form = "walker"

    def __init__(self, booster: Any, feature_names: Sequence[str]) -> None:
        dump = booster.dump_model()
        dump["feature_names"] = list(feature_names)  # the registry's names are authoritative
        self.walker = compile_walker(dump)
        self.feature_names = self.walker.feature_names

    def score(self, row: Row, top: int) -> Scored:
        walker = self.walker
        if top <= 0:
            return Scored(walker.transform(walker.raw(row)), [])
        raw, credits = walker.explain(row)
        return Scored(walker.transform(raw), _top(self.feature_names, credits, top))


def _vector(names: Sequence[str], row: Row) -> np.ndarray:
    values = [row.get(name) for name in names]
    return np.array([[math.nan if v is None else float(v) for v in values]], dtype=np.float64)


class BoosterScorer:
    form = "booster"

    def __init__(self, booster: Any, feature_names: Sequence[str]) -> None:
        self.booster = booster
        self.feature_names = list(feature_names)

    def score(self, row: Row, top: int) -> Scored:
        x = _vector(self.feature_names, row)
        probability = float(self.booster.predict(x)[0])
        if top <= 0:
            return Scored(probability, [])
        contrib = np.asarray(self.booster.predict(x, pred_contrib=True))
        credits: list[float] = contrib[0, :-1].tolist()  # the last column is the bias
        return Scored(probability, _top(self.feature_names, credits, top))


class SklearnScorer:
    form = "sklearn"

    def __init__(self, model: Any, feature_names: Sequence[str]) -> None:
        self.model = model
        self.feature_names = list(feature_names)

    def score(self, row: Row, top: int) -> Scored:
        x = _vector(self.feature_names, row)
        return Scored(float(self.model.predict_proba(x)[0, 1]), [])


def verification_rows(booster: Any, count: int, seed: int = 0) -> np.ndarray:
    """Rows around each feature's training range (the model's own feature infos), with NaN,
    exact zeros, out-of-range values and the split thresholds themselves mixed in."""
    rng = np.random.default_rng(seed)
    dump = booster.dump_model()
    infos = dump.get("feature_infos", {})
    thresholds: dict[int, list[float]] = {}
    stack = [info["tree_structure"] for info in dump.get("tree_info", [])]
    while stack:
        node = stack.pop()
        if "split_feature" in node:
            thresholds.setdefault(int(node["split_feature"]), []).append(float(node["threshold"]))
            stack.extend((node["left_child"], node["right_child"]))
    columns = []
    for i, name in enumerate(booster.feature_name()):
        info = infos.get(name)
        low, high = -1.0, 1.0
        if isinstance(info, dict) and "min_value" in info:
            low, high = float(info["min_value"]), float(info["max_value"])
        span = max(high - low, 1.0)
        column = rng.uniform(low - span / 4, high + span / 4, count)
        if thresholds.get(i):
            at = rng.random(count) < 0.1
            column[at] = rng.choice(thresholds[i], int(at.sum()))
        column[rng.random(count) < 0.05] = 0.0
        column[rng.random(count) < 0.15] = math.nan
        columns.append(column)
    return np.column_stack(columns) if columns else np.zeros((count, 0))


def load_scorer(model: ModelVersion, form: str = "auto") -> Scorer:
    """The fastest exact scorer of a registered model (``form``: auto, walker or booster)."""
    fitted = model.load()
    names = model.feature_names
    if model.kind == "sklearn":
        return SklearnScorer(fitted, names)
    if form == "booster":
        return BoosterScorer(fitted, names)
    try:
        scorer = WalkerScorer(fitted, names)
    except UnsupportedModelError as exc:
        if form == "walker":
            raise
        log.info("model %s v%s served by Booster.predict: %s", model.name, model.version, exc)
        return BoosterScorer(fitted, names)
    if form == "walker":
        return scorer
    rows = verification_rows(fitted, VERIFY_ROWS)
    expected = np.asarray(fitted.predict(rows), dtype=np.float64)
    walked = np.array(
        [scorer.walker.predict(dict(zip(names, _nullable(r), strict=True))) for r in rows]
    )
    if not np.array_equal(expected, walked):
        log.warning(
            "model %s v%s: the walker differs from Booster.predict; serving Booster.predict",
            model.name,
            model.version,
        )
        return BoosterScorer(fitted, names)
    return scorer


def _nullable(values: np.ndarray) -> list[float | None]:
    return [None if math.isnan(v) else float(v) for v in values]


@dataclass
class ServedModel:
    spec: ModelRefSpec
    scorer: Scorer | None
    problem: str | None  # why it cannot score (degraded), when scorer is None
    thresholds: list[tuple[float, str]] = field(default_factory=list)  # highest first
    warned: bool = False

    @property
    def label(self) -> str:
        return f"{self.spec.name}@v{self.spec.version}"


class StrategyModels:
    """The active and shadow models of one strategy, scored in declaration order."""

    def __init__(self, models: list[ServedModel], severity: Mapping[str, int]) -> None:
        self.models = models
        self.severity = severity

    def score(self, row: Row, reasons: list[Reason]) -> tuple[int, list[str]]:
        """Append one reason per model; return the most severe outcome the active models ask
        for (its severity, -1 for none) and the labels of the degraded models."""
        worst = -1
        degraded: list[str] = []
        for model in self.models:
            shadow = model.spec.status == "shadow"
            scorer = model.scorer
            problem = model.problem
            if scorer is not None:
                scored: Scored | None = None
                started = time.perf_counter()
                try:
                    scored = scorer.score(row, model.spec.contributions)
                except Exception as exc:  # a model must never fail a decision
                    problem = f"{type(exc).__name__}: {exc}"
                    if not model.warned:
                        model.warned = True
                        log.exception("model %s failed to score", model.label)
                else:
                    took_ms = (time.perf_counter() - started) * 1e3
                    if took_ms > model.spec.timeout_ms:  # in-process: measured, not preempted
                        problem = f"timed out: {took_ms:.1f} ms > {model.spec.timeout_ms:g} ms"
                        scored = None
                if scored is not None and problem is None:
                    outcome = None
                    for minimum, asked in model.thresholds:
                        if scored.probability >= minimum:
                            outcome = asked
                            break
                    if outcome is not None and not shadow:
                        worst = max(worst, self.severity[outcome])
                    reasons.append(_scored_reason(model, scorer.form, scored, outcome, shadow))
                    continue
            degraded.append(model.label)
            reasons.append(
                Reason(
                    kind="model",
                    id=model.label,
                    description=f"degraded: model {model.label} did not score ({problem})",
                    outcome=None,
                    score=0.0,
                    values={"degraded": True, "error": problem},
                    shadow=shadow,
                )
            )
        return worst, degraded


def _scored_reason(
    model: ServedModel, form: str, scored: Scored, outcome: str | None, shadow: bool
) -> Reason:
    values: dict[str, Any] = {"score": scored.probability, "form": form}
    values.update({f"contribution:{name}": credit for name, credit in scored.contributions})
    return Reason(
        kind="model",
        id=model.label,
        description=f"model {model.spec.name} v{model.spec.version}",
        outcome=outcome,
        score=scored.probability,
        values=values,
        shadow=shadow,
    )


def load_strategy_models(
    registry: ModelRegistry,
    specs: Sequence[ModelRefSpec],
    available: Collection[str],
    severity: Mapping[str, int],
) -> StrategyModels | None:
    """Load a strategy's active and shadow models; a model that cannot load is kept degraded.

    ``available``: the names the strategy's decision row holds (fields, features, derived)."""
    served: list[ServedModel] = []
    for spec in specs:
        if spec.status == "retired":
            continue
        # Outcomes a strategy does not declare are reported by the loader; never asked here.
        asks = ((t.score, t.outcome) for t in spec.thresholds if t.outcome in severity)
        thresholds = sorted(asks, reverse=True)
        scorer: Scorer | None = None
        problem: str | None = None
        try:
            version = registry.get(spec.name, spec.version)
            missing = [n for n in version.feature_names if n not in available]
            if missing:
                problem = f"reads names the project no longer defines: {', '.join(missing)}"
            else:
                scorer = load_scorer(version)
        except DecisionLoopError as exc:
            problem = exc.message
        except Exception as exc:  # a corrupt artifact: the service still starts, degraded
            problem = f"{type(exc).__name__}: {exc}"
        if problem is not None:
            log.warning("model %s@v%s is degraded: %s", spec.name, spec.version, problem)
        served.append(ServedModel(spec, scorer, problem, thresholds))
    return StrategyModels(served, severity) if served else None
