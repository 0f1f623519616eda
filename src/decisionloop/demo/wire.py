"""From simulation columns to the wire: event dicts with ids and ISO times in time order, ground
truth and entity rows, and the files ``write`` produces.

Events use the wire format of the example project (``project/example/events/core.yaml``).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import polars as pl

from decisionloop.demo.population import AGE_BANDS, CATEGORIES, INCOME_BANDS, N_BRANCHES, Population
from decisionloop.demo.typologies import (
    CHANNELS,
    DIRECTIONS,
    MISSING,
    SOURCES,
    TYPOLOGIES,
    Arr,
    EventLog,
)

# fmt: off
_ID_FIELDS = frozenset({"customer_id", "account_id", "device_id", "ip", "merchant_id",
                        "terminal_id", "payee_id", "counterparty_account_id"})
_MONEY_FIELDS = frozenset({"amount", "balance_before"})
_OPTIONAL_TEXT = frozenset({"device_model", "typology", "refers_to_event_id"})
TRUTH_COLUMNS = ("event_id", "typology", "customer_id", "account_id", "occurred_at",
                 "label_available_at")
# fmt: on
Event = dict[str, Any]
Rows = list[dict[str, Any]]
EntityTables = tuple[Rows, Rows, Rows, Rows, Rows, Rows, Rows]  # in DemoBank's field order
Batch = tuple[str, Arr, dict[str, Arr], Arr | None]  # kind, times, raw columns, labelled tx rows


def assemble(
    pop: Population, frame: dict[str, Arr], before: Arr, log: EventLog
) -> tuple[list[Event], Rows]:
    """Every event as a wire dict, in time order with sequential ids, and the ground truth rows."""
    fraud = np.flatnonzero(frame["typ"] >= 0)
    labelled = fraud[frame["label_at"][fraud] < pop.end]  # later labels exist only in the truth
    n_lab = len(labelled)
    label_cols = {
        "entity_type": np.full(n_lab, "event", dtype=object),
        "entity_id": np.full(n_lab, "", dtype=object),  # filled with ids once they exist
        "label": np.full(n_lab, "fraud", dtype=object),
        "typology": np.array(TYPOLOGIES, dtype=object)[frame["typ"][labelled]],
        "source": np.array(SOURCES, dtype=object)[frame["label_src"][labelled]],
    }
    batches: list[Batch] = [
        ("transaction", frame["t"], _transaction_columns(frame, before), None),
        ("label", frame["label_at"][labelled], label_cols, labelled),
    ]
    for kind, t, cols in log.flush(_ID_FIELDS):
        keep = pop.in_period(t)
        batches.append((kind, t[keep], {k: v[keep] for k, v in cols.items()}, None))
    times = np.concatenate([b[1] for b in batches])
    order = np.argsort(times, kind="stable")  # ties keep creation order (login before payment)
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    ids = np.array([f"evt_{i:09d}" for i in range(len(order))], dtype=object)
    stamps = _iso(pop.start, times[order])
    tables = _id_tables(pop)
    out = np.empty(len(order), dtype=object)
    offset = 0
    for kind, t, cols, refs in batches:
        r = rank[offset : offset + len(t)]
        wire = {"event_id": ids[r], "type": np.full(len(t), kind, dtype=object)}
        wire["occurred_at"] = stamps[r]
        absent: dict[str, Arr] = {}
        for name, col in cols.items():
            wire[name], mask = _wire_values(name, col, tables)
            if mask is not None and mask.any():
                absent[name] = mask
        if refs is not None:
            wire["entity_id"] = ids[rank[refs]]
            wire["refers_to_event_id"] = wire["entity_id"]
        _emit(out, r, wire, absent)
        offset += len(t)
    events: list[Event] = out.tolist()
    return events, _truth(pop, frame, fraud, ids[rank[fraud]], stamps[rank[fraud]])


def _transaction_columns(frame: dict[str, Arr], before: Arr) -> dict[str, Arr]:
    n = len(frame["t"])
    return {
        "customer_id": frame["cust"],
        "account_id": frame["acct"],
        "amount": frame["cents"],
        "currency": np.full(n, "EUR", dtype=object),
        "channel": np.array(CHANNELS, dtype=object)[frame["channel"]],
        "direction": np.array(DIRECTIONS, dtype=object)[frame["direction"]],
        "device_id": frame["device"],
        "ip": frame["ip"],
        "merchant_id": frame["merchant"],
        "terminal_id": frame["terminal"],
        "mcc": frame["mcc"],
        "payee_id": frame["payee"],
        "counterparty_account_id": frame["cpty"],
        "balance_before": before,
    }


def _id_tables(pop: Population) -> dict[str, Arr]:
    def table(ids: Iterable[str]) -> Arr:
        return np.array(list(ids), dtype=object)

    return {
        "customer_id": table(pop.customer_id(c) for c in range(pop.n)),
        "account_id": table(pop.acct_ids),
        "device_id": table(pop.device_id(d) for d in range(len(pop.dev_cust))),
        "ip": table(pop.ip_str),
        "merchant_id": table(pop.merchant_id(m) for m in range(len(pop.merch_cat))),
        "terminal_id": table(pop.terminal_id(t) for t in range(pop.n_terminals)),
        "payee_id": table(pop.payee_id(p) for p in range(len(pop.pay_cust))),
        "counterparty_account_id": table(pop.counterparty_ids()),
    }


def _wire_values(name: str, col: Arr, tables: dict[str, Arr]) -> tuple[Arr, Arr | None]:
    """Raw column -> (object array of wire values, mask of rows where the field is absent)."""
    if name in _ID_FIELDS and col.dtype != object:
        return tables[name][np.maximum(col, 0)], col < 0
    if name in _MONEY_FIELDS:
        return (col / 100).astype(object), col == MISSING
    if name == "mcc":
        return np.array([f"{v:04d}" for v in range(10_000)], dtype=object)[col], col < 0
    values = col if col.dtype == object else col.astype(object)
    # Only these object fields are optional; comparing every column with None would be slow.
    return values, (values == None) if name in _OPTIONAL_TEXT else None  # noqa: E711


def _emit(out: Arr, positions: Arr, wire: dict[str, Arr], absent: dict[str, Arr]) -> None:
    """One dict per row; rows are grouped by which optional fields they carry so that each group
    is built by C-level ``dict(zip(...))`` (dict creation dominates the build time)."""
    names = list(wire)
    code = np.zeros(len(positions), dtype=np.int64)
    for i, k in enumerate(names):
        if k in absent:
            code |= absent[k].astype(np.int64) << i
    for c in np.unique(code).tolist():
        rows = np.flatnonzero(code == c)
        keep = [k for i, k in enumerate(names) if not (c >> i) & 1]
        values = zip(*[wire[k][rows].tolist() for k in keep], strict=True)
        out[positions[rows]] = list(map(dict, map(partial(zip, keep), values)))


def _iso(start: datetime, t: Arr) -> Arr:
    """ISO-8601 UTC with microseconds, as ``datetime.isoformat(timespec="microseconds")``."""
    epoch_us = (start - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
    stamps = pl.Series(t + epoch_us, dtype=pl.Int64).cast(pl.Datetime("us"))
    text = stamps.dt.strftime("%Y-%m-%dT%H:%M:%S.%6f+00:00").to_list()
    return np.array(text, dtype=object)


def _truth(pop: Population, frame: dict[str, Arr], fraud: Arr, event_ids: Arr, stamps: Arr) -> Rows:
    order = np.argsort(event_ids.astype(str), kind="stable")  # ids follow time order
    label_at = _iso(pop.start, frame["label_at"][fraud])
    values = (
        (
            event_ids[i],
            TYPOLOGIES[int(frame["typ"][fraud[i]])],
            pop.customer_id(int(frame["cust"][fraud[i]])),
            pop.account_id(int(frame["acct"][fraud[i]])),
            stamps[i],
            label_at[i],
        )
        for i in order.tolist()
    )
    return [dict(zip(TRUTH_COLUMNS, row, strict=True)) for row in values]


def entity_tables(pop: Population, closing: Arr) -> EntityTables:
    """Rows of the entity CSVs; ``closing`` is each account's closing balance in cents."""
    branch = [f"BR{b + 1:02d}" for b in range(N_BRANCHES)]
    customers = [
        {
            "customer_id": pop.customer_id(c),
            "segment": "sme" if pop.sme[c] else "retail",
            "age_band": AGE_BANDS[pop.age[c]],
            "income_band": INCOME_BANDS[pop.income[c]],
            "tenure_years": float(pop.tenure[c]),
            "branch": branch[pop.branch[c]],
            "products": pop.products[c],
        }
        for c in range(pop.n)
    ]
    accounts = [
        {
            "account_id": pop.acct_ids[a],
            "customer_id": pop.customer_id(int(pop.acct_cust[a])),
            "kind": pop.acct_kind[a],
            "opened_at": pop.acct_opened[a],
            "balance": int(closing[a]) / 100,
        }
        for a in range(len(pop.acct_ids))
    ]
    seen = _iso(pop.start, np.array(pop.dev_active, dtype=np.int64))
    devices = [
        {
            "device_id": pop.device_id(d),
            "customer_id": pop.customer_id(c),
            "kind": "mobile" if pop.dev_mobile[d] else "desktop",
            "model": pop.dev_model[d],
            "first_seen_at": seen[d],
        }
        for d, c in enumerate(pop.dev_cust)
    ]
    ips = [
        {"ip": ip, "kind": kind, "geo": geo}
        for ip, kind, geo in zip(pop.ip_str, pop.ip_kind, pop.ip_geo, strict=True)
    ]
    merchants = [
        {
            "merchant_id": pop.merchant_id(m),
            "name": f"{CATEGORIES[cat][0].replace('_', ' ').title()} {m}",
            "category": CATEGORIES[cat][0],
            "mcc": f"{CATEGORIES[cat][1]:04d}",
            "channel": "online" if pop.merch_online[m] else "physical",
            "branch": None if pop.merch_online[m] else branch[pop.merch_branch[m]],
        }
        for m, cat in enumerate(pop.merch_cat.tolist())
    ]
    terminals = [
        {
            "terminal_id": pop.terminal_id(t),
            "merchant_id": pop.merchant_id(m) if m >= 0 else None,
            "kind": "pos" if m >= 0 else "atm",
            "branch": branch[pop.term_branch[t]],
        }
        for t, m in enumerate(pop.term_merchant.tolist())
    ]
    created = _iso(pop.start, np.array(pop.pay_created, dtype=np.int64))
    cpty = pop.counterparty_ids()
    payees = [
        {
            "payee_id": pop.payee_id(p),
            "customer_id": pop.customer_id(c),
            "kind": pop.pay_kind[p],
            "counterparty_account_id": cpty[pop.pay_cpty[p]],
            "created_at": created[p],
        }
        for p, c in enumerate(pop.pay_cust)
    ]
    return customers, accounts, devices, ips, merchants, terminals, payees


def write_files(
    directory: Path, events: list[Event], tables: dict[str, Rows], manifest: dict[str, Any]
) -> dict[str, Path]:
    """events.jsonl (one compact UTF-8 JSON event per line, in order), one CSV per table and
    manifest.json; returns the paths by name, in that order."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = {"events": directory / "events.jsonl"}
    line = partial(orjson.dumps, option=orjson.OPT_APPEND_NEWLINE)
    with paths["events"].open("wb") as fh:
        for i in range(0, len(events), 50_000):  # chunks bound the memory of joined lines
            fh.write(b"".join(map(line, events[i : i + 50_000])))
    for name, rows in tables.items():
        paths[name] = directory / f"{name}.csv"
        # truth can be empty and still needs its header
        header = list(TRUTH_COLUMNS) if name == "truth" else list(rows[0]) if rows else []
        _write_csv(paths[name], rows, header)
    paths["manifest"] = directory / "manifest.json"
    paths["manifest"].write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return paths


def _write_csv(path: Path, rows: Rows, columns: list[str]) -> None:
    """Lists are joined with ';', absent values are empty cells."""

    def cell(value: Any) -> Any:
        if isinstance(value, list):
            return ";".join(value)
        if isinstance(value, bool):
            return "true" if value else "false"
        return "" if value is None else value

    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([cell(row.get(c)) for c in columns] for row in rows)
