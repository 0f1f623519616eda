"""Feature templates: expansion over entities and aggregations, and located mistakes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from decisionloop.engine.engine import build_engine
from decisionloop.errors import Problem
from decisionloop.project.loader import Project, load_project
from decisionloop.project.scaffold import init_project

TEMPLATES = """\
templates:
  - entities: [customer, account]
    aggregations: [sum, avg, max]
    field: amount
    windows: [1h, 24h]
    event_types: [transaction]
    filter: direction = 'debit'
  - name: "{entity}_{aggregation}"
    entities: [device]
    aggregations: [first_seen_age, time_since_last]
    windows: [7d]
    event_types: [transaction]
"""


def write(tmp_path: Path, text: str) -> Path:
    root = tmp_path / "bank"
    init_project(root)
    (root / "features" / "templates.yaml").write_text(text)
    return root


def at(root: Path, needle: str, after: str = "") -> tuple[int, int]:
    """1-based line and column of ``needle`` in the templates file, computed from the text."""
    text = (root / "features" / "templates.yaml").read_text()
    offset = text.index(needle, text.index(after) if after else 0)
    return text.count("\n", 0, offset) + 1, offset - (text.rfind("\n", 0, offset) + 1) + 1


def problems(root: Path) -> list[Problem]:
    project = load_project(root, strict=False)
    return [p for p in project.problems if p.file == "features/templates.yaml"]


def test_a_template_expands_over_entities_aggregations_and_windows(tmp_path: Path) -> None:
    project = load_project(write(tmp_path, TEMPLATES))
    engine = build_engine(project)
    names = set(engine.features.names)
    expected = {
        f"{entity}.amount_{aggregation}_{window}"
        for entity in ("customer", "account")
        for aggregation in ("sum", "avg", "max")
        for window in ("1h", "24h")
    } | {"device.device_first_seen_age_7d", "device.device_time_since_last_7d"}
    assert expected <= names
    assert len(names) == len(engine.features.names)  # each name once


def test_expanded_definitions_compute_like_written_ones(tmp_path: Path) -> None:
    engine = build_engine(load_project(write(tmp_path, TEMPLATES)))
    start = datetime(2026, 6, 1, 12, tzinfo=UTC)
    seen = {}
    for i, (amount, direction) in enumerate([(100.0, "debit"), (50.0, "credit"), (20.0, "debit")]):
        event = engine.catalog.validate(
            {
                "event_id": f"e{i}",
                "type": "transaction",
                "occurred_at": (start + timedelta(minutes=i)).isoformat(),
                "customer_id": "C1",
                "account_id": "A1",
                "device_id": "D1",
                "amount": amount,
                "currency": "EUR",
                "channel": "transfer",
                "direction": direction,
            }
        )
        seen = engine.features.observe(event)
    assert seen["customer.amount_sum_1h"] == 120.0  # the credit is filtered out
    assert seen["account.amount_avg_24h"] == 60.0
    assert seen["account.amount_max_1h"] == 100.0
    assert seen["device.device_first_seen_age_7d"] == 120.0
    assert seen["device.device_time_since_last_7d"] == 60.0


@pytest.mark.parametrize(
    ("old", "new", "reason"),
    [
        (
            "[customer, account]",
            "[customer, acount]",
            "unknown entity 'acount'; did you mean 'account'?",
        ),
        ("[sum, avg, max]", "[sum, avg, maxx]", "unknown aggregation 'maxx'; did you mean 'max'?"),
        ("field: amount", "field: amont", "unknown field 'amont'; did you mean 'amount'?"),
        (
            "[transaction]\n    filter",
            "[transactoin]\n    filter",
            "unknown event type 'transactoin'; did you mean 'transaction'?",
        ),
    ],
)
def test_unknown_names_are_located_with_a_suggestion(
    tmp_path: Path, old: str, new: str, reason: str
) -> None:
    root = write(tmp_path, TEMPLATES.replace(old, new, 1))
    wrong = reason.split("'")[1]
    line, column = at(root, wrong)
    found = problems(root)
    assert [(p.line, p.column, p.reason) for p in found] == [(line, column, reason)]


def test_a_value_aggregation_without_field_is_refused_where_it_is_named(tmp_path: Path) -> None:
    root = write(
        tmp_path, TEMPLATES.replace("aggregations: [first_seen_age", "aggregations: [stddev")
    )
    line, column = at(root, "stddev")
    assert [(p.line, p.column, p.reason) for p in problems(root)] == [
        (line, column, "stddev needs a `field`")
    ]


def test_a_name_defined_twice_reports_both_origins(tmp_path: Path) -> None:
    twice = (
        TEMPLATES
        + """\
  - name: amount_sum
    entities: [account]
    aggregations: [sum]
    field: amount
    windows: [24h, 7d]
    event_types: [transaction]
    filter: direction = 'debit'
"""
    )
    root = write(tmp_path, twice)
    first_line, first_column = at(root, "entities: [customer, account]")
    line, column = at(root, "name: amount_sum")
    found = problems(root)
    assert [(p.line, p.column, p.reason) for p in found] == [
        (
            line,
            column,
            "account.amount_sum_24h is also defined at "
            f"features/templates.yaml:{first_line}:{first_column} (templates.0)",
        )
    ]


def test_definitions_sharing_a_name_must_share_the_filter(tmp_path: Path) -> None:
    clash = (
        TEMPLATES
        + """\
  - entities: [payee]
    aggregations: [sum]
    field: amount
    windows: [30d]
    event_types: [transaction]
"""
    )
    root = write(tmp_path, clash)
    found = problems(root)
    line, column = at(root, "entities: [payee]")
    assert [(p.line, p.column) for p in found] == [(line, column)]
    assert found[0].reason.startswith("feature name 'amount_sum' is also used at ")
    assert found[0].reason.endswith(
        "with another filter or other event types; definitions sharing a name must share both"
    )


def test_a_name_pattern_with_an_unknown_placeholder_is_refused(tmp_path: Path) -> None:
    root = write(tmp_path, TEMPLATES.replace('"{entity}_{aggregation}"', '"{entty}_{aggregation}"'))
    line, column = at(root, '"{entty}')
    found = problems(root)
    assert [(p.line, p.column) for p in found] == [(line, column)]
    assert "{entity}, {field}, {aggregation}" in found[0].reason


def test_a_filter_error_in_a_template_is_reported_once_at_its_text(tmp_path: Path) -> None:
    root = write(tmp_path, TEMPLATES.replace("direction = 'debit'", "direction = = 'debit'"))
    project: Project = load_project(root, strict=False)
    found = [p for p in project.problems if p.file == "features/templates.yaml"]
    assert len(found) == 1
    assert found[0].line == at(root, "direction = =")[0]


def test_a_label_delay_goes_to_the_label_rates_only_and_is_refused_elsewhere(
    tmp_path: Path,
) -> None:
    rates = (
        '  - name: "{label}_{aggregation}"\n'
        "    entities: [customer]\n"
        "    aggregations: [labelled_share, count]\n"
        "    label: fraud\n"
        "    label_delay: 7d\n"
        "    windows: [7d]\n"
        "    event_types: [transaction]\n"
    )
    root = write(tmp_path, TEMPLATES + rates)
    delays = {f.aggregation: f.label_delay for f in load_project(root).features}
    assert delays["labelled_share"] == "7d"
    assert delays["count"] is None
    root = write(tmp_path / "again", TEMPLATES + rates.replace("labelled_share, ", ""))
    line, column = at(root, "7d", after="label_delay")
    reasons = [(p.line, p.column, p.reason) for p in problems(root)]
    expected = "no aggregation reads `label_delay` (only labelled_count, labelled_share)"
    assert (line, column, expected) in reasons
