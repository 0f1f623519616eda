"""The store's history as the tables the SQL path of ``has_label``/``in_list`` reads.

:func:`register_history` puts both tables on a DuckDB connection (as Arrow views) before a
backtest runs the generated SQL; every row keeps its removal and expiry, so the ``EXISTS`` of
:func:`decisionloop.ops.lookups.lookup_exists` sees each label as it was at each event's time.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from decisionloop.ops.lookups import LABEL_HISTORY, LIST_HISTORY
from decisionloop.ops.store import Label, ListItem

_TIME = pa.timestamp("us", tz="UTC")
LABEL_SCHEMA = pa.schema(
    [
        ("dl_entity_type", pa.string()),
        ("dl_entity_id", pa.string()),
        ("dl_label", pa.string()),
        ("dl_created_at", _TIME),
        ("dl_removed_at", _TIME),
        ("dl_expires_at", _TIME),
    ]
)
ITEM_SCHEMA = pa.schema(
    [
        ("dl_list", pa.string()),
        ("dl_value", pa.string()),
        ("dl_created_at", _TIME),
        ("dl_removed_at", _TIME),
    ]
)


def label_table(labels: Sequence[Label]) -> pa.Table:
    return pa.Table.from_pylist(
        [
            {
                "dl_entity_type": x.entity_type,
                "dl_entity_id": x.entity_id,
                "dl_label": x.label,
                "dl_created_at": x.created_at,
                "dl_removed_at": x.removed.at if x.removed else None,
                "dl_expires_at": x.expires_at,
            }
            for x in labels
        ],
        schema=LABEL_SCHEMA,
    )


def item_table(items: Sequence[ListItem]) -> pa.Table:
    return pa.Table.from_pylist(
        [
            {
                "dl_list": x.list_name,
                "dl_value": x.value,
                "dl_created_at": x.created_at,
                "dl_removed_at": x.removed.at if x.removed else None,
            }
            for x in items
        ],
        schema=ITEM_SCHEMA,
    )


# The ``decided_at`` column a backtest table over the DuckDB source layer (``events e``) needs:
# the stored decision's time, or, for events stored without a decision (imports), their event
# time. ``ingested_at`` would be wrong for imports, which are all "ingested" at import time.
DECIDED_AT_SQL = (
    "COALESCE((SELECT CAST(json_extract_string(d.body, '$.decided_at') AS TIMESTAMPTZ) "
    "FROM decisions d WHERE d.event_id = e.event_id LIMIT 1), e.occurred_at)"
)


def register_history(con: Any, labels: Sequence[Label], items: Sequence[ListItem]) -> None:
    """Make the history visible to generated SQL on ``con`` (a DuckDB connection)."""
    con.register(LABEL_HISTORY, label_table(labels))
    con.register(LIST_HISTORY, item_table(items))
