"""``decisionloop features suggest``: a starter set of feature definitions, written as templates.

For one decided event type (a transaction) and every entity it carries, the file holds:

* counts, sums and averages of its main amount field over 1, 7 and 30 days
  (``customer.txn_count_7d``, ``customer.amount_sum_1d``, ``account.amount_avg_30d``);
* label rates per entity over 1, 7 and 30 days — the share of the entity's events labelled
  ``fraud`` by a label that had arrived before the event (``labelled_share``: a chargeback learnt
  weeks later never leaks into earlier events), counting only events older than a label delay
  (``label_delay``, 7 days unless asked otherwise: the windows end that long before the event, so
  that recent events, whose labels cannot be known yet, do not dilute the rate) — when the project
  declares ``label`` events;
* derived features: the hour of day, a weekend flag, and the amount relative to each entity's own
  30-day average.

Everything is plain YAML in the project folder, using the same template and derived syntax a user
would write: nothing is hidden, and the file is meant to be edited. The text is checked with the
project before it is written (the caller validates), so a suggestion never breaks a project.
"""

from __future__ import annotations

from dataclasses import dataclass

from decisionloop.errors import InputError, Problem
from decisionloop.features.semantics import LABEL_EVENT
from decisionloop.project.definitions import window_seconds
from decisionloop.project.loader import Project

__all__ = ["Suggestion", "suggest_features"]

WINDOWS = ["1d", "7d", "30d"]
# The feedback delay of the fraud literature's risk features: most confirmed frauds are reported
# within a week (the demo bank's account takeovers within days, mule accounts within weeks).
LABEL_DELAY = "7d"


@dataclass(frozen=True)
class Suggestion:
    event_type: str
    entities: list[str]
    amount_field: str | None
    label: str | None
    label_delay: str | None
    text: str


def suggest_features(
    project: Project,
    event_type: str | None = None,
    label: str = "fraud",
    prefix: str = "txn",
    label_delay: str | None = LABEL_DELAY,
) -> Suggestion:
    """The starter features file for ``event_type`` (default: the only decided type);
    ``label_delay`` ``None`` (or ``0d``): label rates over windows ending at the event."""
    if label_delay is not None:
        try:
            delay_seconds = window_seconds(label_delay)
        except ValueError as exc:
            raise InputError("bad label delay", [Problem("--label-delay", str(exc))]) from exc
        label_delay = label_delay if delay_seconds else None
    chosen = project.event_type_named(event_type)
    spec = project.event_types[chosen]
    entities = [e for e in spec.entities if e in project.entities]
    if not entities:
        raise InputError(
            "nothing to aggregate by",
            [Problem("--event-type", f"{chosen} events carry no entity key")],
        )
    numbers = [name for name, f in spec.fields.items() if f.type in ("number", "integer")]
    amount = "amount" if "amount" in numbers else (numbers[0] if numbers else None)
    labelled = LABEL_EVENT in project.event_types
    existing = {f.name for f in project.features} | {d.name for d in project.derived}
    lines = [
        f"# Starter features for {chosen} events, written by `decisionloop features suggest`.",
        "# Edit freely: these are ordinary templates and derived features (docs/concepts.md).",
        "templates:",
        f'  - name: "{prefix}_{{aggregation}}"',
        f"    entities: [{', '.join(entities)}]",
        "    aggregations: [count]",
        f"    windows: [{', '.join(WINDOWS)}]",
        f"    event_types: [{chosen}]",
    ]
    if amount is not None:
        lines += [
            '  - name: "{field}_{aggregation}"',
            f"    entities: [{', '.join(entities)}]",
            "    aggregations: [sum, avg]",
            f"    field: {amount}",
            f"    windows: [{', '.join(WINDOWS)}]",
            f"    event_types: [{chosen}]",
        ]
    if labelled:
        lines += [
            f"  # Share of the entity's {chosen} events labelled {label} by a label that had",
            "  # arrived before the event (labels learnt later never leak into earlier events).",
        ]
        if label_delay is not None:
            lines += [
                f"  # Each window ends {label_delay} before the event: only events old enough for",
                "  # their labels to have arrived are counted (set label_delay to your feedback",
                "  # delay; remove it for windows ending at the event).",
            ]
        lines += [
            '  - name: "{label}_rate"',
            f"    entities: [{', '.join(entities)}]",
            "    aggregations: [labelled_share]",
            f"    label: {label}",
            f"    windows: [{', '.join(WINDOWS)}]",
            *([f"    label_delay: {label_delay}"] if label_delay is not None else []),
            f"    event_types: [{chosen}]",
        ]
    derived = [
        (f"{prefix}_hour_of_day", "hour(occurred_at)", "UTC hour of the event"),
        (
            f"{prefix}_is_weekend",
            "CASE WHEN dayofweek(occurred_at) IN (0, 6) THEN 1 ELSE 0 END",
            "1 on Saturday and Sunday (UTC)",
        ),
    ]
    if amount is not None:
        for entity in entities:
            derived.append(
                (
                    f"{amount}_vs_{entity}_avg_30d",
                    f"{amount} / {entity}.{amount}_avg_30d",
                    f"the {amount} relative to the {entity}'s 30-day average (NULL without one)",
                )
            )
    lines.append("derived:")
    for name, expression, description in derived:
        if name in existing:
            continue
        lines += [
            f"  - name: {name}",
            f"    expression: {expression}",
            f"    event_types: [{chosen}]",
            f"    description: {description}",
        ]
    return Suggestion(
        chosen,
        entities,
        amount,
        label if labelled else None,
        label_delay if labelled else None,
        "\n".join(lines) + "\n",
    )
