"""The generated tree walker scores exactly as ``Booster.predict``, NULLs and zeros included, and
its per-path contributions add up to the raw score."""

from __future__ import annotations

import itertools
import math
from typing import Any

import lightgbm as lgb
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from decisionloop.ml.serving import BoosterScorer, WalkerScorer, _top, verification_rows
from decisionloop.ml.walker import UnsupportedModelError, compile_walker


def synthetic(
    rng: np.random.Generator, rows: int, features: int, missing: float = 0.1
) -> tuple[np.ndarray, np.ndarray]:
    x = rng.normal(size=(rows, features))
    x[rng.random(x.shape) < 0.05] = 0.0
    x[rng.random(x.shape) < missing] = np.nan
    signal = np.nan_to_num(x[:, 0]) + np.nan_to_num(x[:, 1]) * np.isnan(x[:, 2])
    y = (signal + rng.normal(scale=0.7, size=rows) > 1.2).astype(int)
    return x, y


def fit(x: np.ndarray, y: np.ndarray, trees: int, **params: Any) -> lgb.Booster:
    base = {"objective": "binary", "verbose": -1, "num_threads": 1, "min_child_samples": 5}
    return lgb.train({**base, **params}, lgb.Dataset(x, y), num_boost_round=trees)


def as_rows(names: tuple[str, ...], x: np.ndarray) -> list[dict[str, float | None]]:
    return [
        {n: None if math.isnan(v) else float(v) for n, v in zip(names, row, strict=True)}
        for row in x
    ]


def probe(rng: np.random.Generator, booster: lgb.Booster, rows: int) -> np.ndarray:
    """Random rows plus rows hitting the thresholds, zeros and NaN (verification_rows)."""
    x = rng.normal(scale=2.0, size=(rows, booster.num_feature()))
    x[rng.random(x.shape) < 0.2] = np.nan
    x[rng.random(x.shape) < 0.05] = 0.0
    return np.vstack([x, verification_rows(booster, rows, seed=1)])


@pytest.fixture(scope="module")
def big_model() -> lgb.Booster:
    x, y = synthetic(np.random.default_rng(0), 4000, 20)
    return fit(x, y, 200, num_leaves=31)


def test_the_walker_gives_identical_scores_on_thousands_of_rows(big_model: lgb.Booster) -> None:
    walker = compile_walker(big_model.dump_model())
    x = probe(np.random.default_rng(2), big_model, 2000)
    rows = as_rows(walker.feature_names, x)
    expected = big_model.predict(x)
    expected_raw = big_model.predict(x, raw_score=True)
    assert np.array_equal(np.array([walker.predict(r) for r in rows]), expected)
    assert np.array_equal(np.array([walker.raw(r) for r in rows]), expected_raw)
    # A name absent from the row is a NULL, exactly like None.
    sparse = {k: v for k, v in rows[0].items() if v is not None}
    assert walker.raw(sparse) == expected_raw[0]


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**16),
    missing=st.sampled_from(["nan", "zero", "none"]),
    num_leaves=st.integers(2, 40),
    missing_share=st.sampled_from([0.0, 0.1, 0.4]),
)
def test_every_missing_value_mode_is_reproduced(
    seed: int, missing: str, num_leaves: int, missing_share: float
) -> None:
    rng = np.random.default_rng(seed)
    x, y = synthetic(rng, 600, 6, missing_share)
    params = {
        "nan": {},
        "zero": {"zero_as_missing": True},  # missing_type Zero
        "none": {"use_missing": False},  # missing_type None: NaN compared as 0.0
    }[missing]
    booster = fit(x, y, 15, num_leaves=num_leaves, **params)
    walker = compile_walker(booster.dump_model())
    probes = probe(rng, booster, 300)
    scores = np.array([walker.predict(r) for r in as_rows(walker.feature_names, probes)])
    assert np.array_equal(scores, booster.predict(probes))


def test_contributions_add_up_to_the_raw_score(big_model: lgb.Booster) -> None:
    walker = compile_walker(big_model.dump_model())
    x = probe(np.random.default_rng(3), big_model, 300)
    raws = big_model.predict(x, raw_score=True)
    for row, raw in zip(as_rows(walker.feature_names, x), raws, strict=True):
        walked, credits = walker.explain(row)
        assert walked == raw
        assert walker.bias + sum(credits) == pytest.approx(raw, abs=1e-9)


def saabas(dump: dict[str, Any], leaves: np.ndarray) -> list[float]:
    """Reference contributions: for the leaf LightGBM itself reached in each tree
    (``pred_leaf``), the path from the root, each split crediting its feature with the change of
    the hessian-weighted mean of the leaves below."""

    def mean(node: dict[str, Any]) -> tuple[float, float]:
        if "leaf_value" in node:
            return node["leaf_value"], node.get("leaf_weight", 0.0)
        (a, wa), (b, wb) = mean(node["left_child"]), mean(node["right_child"])
        return ((a * wa + b * wb) / (wa + wb), wa + wb) if wa + wb > 0 else ((a + b) / 2, 0.0)

    def path(node: dict[str, Any], leaf: int) -> list[dict[str, Any]] | None:
        if "leaf_value" in node:
            return [node] if node["leaf_index"] == leaf else None
        for child in (node["left_child"], node["right_child"]):
            below = path(child, leaf)
            if below is not None:
                return [node, *below]
        return None

    credits = [0.0] * len(dump["feature_names"])
    for info, leaf in zip(dump["tree_info"], leaves, strict=True):
        nodes = path(info["tree_structure"], int(leaf))
        assert nodes is not None
        for parent, child in itertools.pairwise(nodes):
            credits[parent["split_feature"]] += mean(child)[0] - mean(parent)[0]
    return credits


def test_contributions_are_the_credits_along_lightgbms_own_paths(big_model: lgb.Booster) -> None:
    dump = big_model.dump_model()
    walker = compile_walker(dump)
    x = probe(np.random.default_rng(8), big_model, 100)
    leaves = big_model.predict(x, pred_leaf=True)
    for row, reached in zip(as_rows(walker.feature_names, x), leaves, strict=True):
        _, credits = walker.explain(row)
        assert credits == pytest.approx(saabas(dump, reached), abs=1e-12)


def test_contributions_credit_the_features_the_model_uses() -> None:
    rng = np.random.default_rng(4)
    x = rng.normal(size=(2000, 3))
    y = (x[:, 1] > 0.5).astype(int)  # only feature 1 matters
    booster = fit(x, y, 20)
    walker = compile_walker(booster.dump_model())
    _, credits = walker.explain({"Column_0": 0.1, "Column_1": 2.0, "Column_2": -0.3})
    assert np.argmax(np.abs(credits)) == 1
    assert credits[1] > 0  # a high value of the fraud feature pushes the score up


def test_scorers_agree_and_report_the_top_contributions(big_model: lgb.Booster) -> None:
    names = [f"f{i}" for i in range(big_model.num_feature())]
    walker, booster = WalkerScorer(big_model, names), BoosterScorer(big_model, names)
    x = probe(np.random.default_rng(5), big_model, 50)
    for row in as_rows(tuple(names), x):
        by_walker, by_booster = walker.score(row, 3), booster.score(row, 3)
        assert by_walker.probability == by_booster.probability
        assert len(by_walker.contributions) <= 3
        magnitudes = [abs(c) for _, c in by_walker.contributions]
        assert magnitudes == sorted(magnitudes, reverse=True)


def test_categorical_splits_are_left_to_booster_predict() -> None:
    rng = np.random.default_rng(6)
    x = np.column_stack([rng.integers(0, 5, 1000), rng.normal(size=1000)])
    y = (x[:, 0] == 3).astype(int)
    booster = lgb.train(
        {"objective": "binary", "verbose": -1, "min_data_per_group": 5, "cat_smooth": 1},
        lgb.Dataset(x, y, categorical_feature=[0]),
        num_boost_round=5,
    )
    with pytest.raises(UnsupportedModelError):
        compile_walker(booster.dump_model())


def test_generated_code_carries_names_only_as_literals() -> None:
    rng = np.random.default_rng(7)
    x, y = synthetic(rng, 500, 3)
    booster = fit(x, y, 3)
    dump = booster.dump_model()
    hostile = "x'); import os; os.system('echo pwned'); ('"
    dump["feature_names"] = [hostile, "b", "c"]
    walker = compile_walker(dump)
    assert repr(hostile) in walker.source
    expected = booster.predict(np.array([[1.5, 0.0, math.nan]]), raw_score=True)[0]
    assert walker.raw({hostile: 1.5, "b": 0.0}) == expected


def test_top_contributions_rank_by_magnitude_ties_in_order_nan_last() -> None:
    names = ["a", "b", "c", "d"]
    assert _top(names, [1.0, -1.0, 0.5, 1.0], 3) == [("a", 1.0), ("b", -1.0), ("d", 1.0)]
    assert _top(names, [1.0, math.nan, 2.0, 0.0], 2) == [("c", 2.0), ("a", 1.0)]
    assert _top(names, [0.0, 0.0, 3.0, 0.0], 3) == [("c", 3.0)]  # zeros are no reason
