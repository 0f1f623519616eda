"""Bulk import: CSV, Parquet and JSONL files, with and without a column mapping.

Through the CLI (``typer.testing.CliRunner`` on the real app) and the Python API. Counts are checked
against the DuckDB source layer itself, and the PaySim figures against the CSV read independently.
"""

from __future__ import annotations

import csv
import os
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import duckdb
import orjson
import polars as pl
import pytest
from click.testing import Result

from decisionloop.engine.engine import build_engine
from decisionloop.engine.service import DecisionService
from decisionloop.ingest.importer import ImportReport, import_file
from decisionloop.ingest.mapping import ColumnMapping
from decisionloop.project.loader import load_project
from decisionloop.storage.memory import MemorySourceLog
from tests.conftest import cli, plain

REPO = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data"
PAYSIM = REPO.parent / "shared" / "data" / "paysim_sample.csv"
PAYSIM_MAPPING = REPO / "examples" / "paysim" / "mapping.yaml"
BAD_ROWS = DATA / "bad_rows.csv"
BAD_ROWS_MAPPING = DATA / "bad_rows_mapping.yaml"
WIRE_EVENTS = DATA / "wire_events.jsonl"
ORIGIN_EPOCH = 1_767_225_600  # 2026-01-01T00:00:00Z, the origin in examples/paysim/mapping.yaml
LABEL_DELAY_S = 2 * 86_400  # the mapping's `delay: 2d`

needs_paysim = pytest.mark.skipif(
    not PAYSIM.is_file(), reason=f"PaySim sample not found at {PAYSIM} (shared/ beside the repo)"
)
SUMMARY = re.compile(r"^rows (\d+): stored (\d+) events, (\d+) duplicates, (\d+) bad rows$", re.M)


# -- helpers ------------------------------------------------------------------------------------
pytestmark = pytest.mark.usefixtures("isolated")


def summary(result: Result) -> tuple[int, int, int, int]:
    found = SUMMARY.search(plain(result.stdout))
    assert found, result.output
    rows, stored, duplicates, bad = (int(g) for g in found.groups())
    return rows, stored, duplicates, bad


def problem_lines(result: Result) -> list[str]:
    return [line for line in plain(result.stderr).splitlines() if line.startswith("  - ")]


def init(tmp_path: Path) -> Path:
    project = tmp_path / "bank"
    result = cli("init", project)
    assert result.exit_code == 0, result.output
    assert (project / "events" / "core.yaml").is_file()
    return project


def ingest(file: Path, project: Path, data_dir: Path, mapping: Path | None = None) -> Result:
    args: list[object] = ["ingest", file, "--project", project, "--data-dir", data_dir]
    if mapping is not None:
        args += ["--mapping", mapping]
    return cli(*args, "--show", 1000)


def query(data_dir: Path, sql: str) -> list[tuple[object, ...]]:
    """Read the source layer directly, read-only, once the CLI has closed it."""
    with duckdb.connect(str(data_dir / "source.duckdb"), read_only=True) as conn:
        return conn.execute(sql).fetchall()


def counts_by_type(data_dir: Path) -> dict[str, int]:
    rows = query(data_dir, "SELECT event_type, count(*) FROM events GROUP BY ALL")
    return {str(t): int(str(n)) for t, n in rows}


def stored_ids(data_dir: Path) -> set[str]:
    return {str(r[0]) for r in query(data_dir, "SELECT event_id FROM events")}


def paysim_rows() -> list[dict[str, str]]:
    with PAYSIM.open(newline="") as handle:
        return list(csv.DictReader(handle))


def service_for(project: Path, source: MemorySourceLog) -> DecisionService:
    service = DecisionService(build_engine(load_project(project)), source)
    service.start()
    return service


def import_with(service: DecisionService, file: Path, mapping_file: Path | None) -> ImportReport:
    mapping = ColumnMapping.load(mapping_file, service.engine.catalog) if mapping_file else None
    return import_file(service, file, mapping)


# -- (a) + (b) PaySim through the CLI -----------------------------------------------------------
@dataclass(frozen=True)
class PaySimImport:
    project: Path
    data_dir: Path
    result: Result
    rows: list[dict[str, str]]


@pytest.fixture(scope="module")
def paysim(tmp_path_factory: pytest.TempPathFactory) -> PaySimImport:
    """`decisionloop init` then `decisionloop ingest` of the PaySim sample, once for the module."""
    if not PAYSIM.is_file():
        pytest.skip(f"PaySim sample not found at {PAYSIM} (shared/ beside the repo)")
    tmp = tmp_path_factory.mktemp("paysim")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp)
        for name in [n for n in os.environ if n.startswith("DECISIONLOOP_")]:
            mp.delenv(name)
        project = init(tmp)
        result = ingest(PAYSIM, project, tmp / "state", PAYSIM_MAPPING)
    return PaySimImport(project, tmp / "state", result, paysim_rows())


def test_paysim_import_via_cli_stores_every_row_and_one_label_per_fraud(
    paysim: PaySimImport,
) -> None:
    rows, data_dir = paysim.rows, paysim.data_dir
    fraud_rows = [i for i, r in enumerate(rows, start=1) if r["isFraud"] == "1"]
    assert len(rows) == 10_000
    assert len(fraud_rows) == 500  # the sample is enriched to 5 % fraud

    assert paysim.result.exit_code == 0, paysim.result.output
    assert summary(paysim.result) == (len(rows), len(rows) + len(fraud_rows), 0, 0)
    assert problem_lines(paysim.result) == []
    assert counts_by_type(data_dir) == {"transaction": len(rows), "label": len(fraud_rows)}
    # Event ids are the row number and originator, as documented in the mapping.
    expected_ids = {f"paysim-{i}-{r['nameOrig']}" for i, r in enumerate(rows, start=1)}
    fraud_ids = {f"paysim-{i}-{rows[i - 1]['nameOrig']}" for i in fraud_rows}
    labels = query(
        data_dir,
        "SELECT event_id, payload->>'refers_to_event_id', payload->>'entity_id', "
        "payload->>'label', payload->>'source' FROM events WHERE event_type = 'label'",
    )
    assert {str(r[1]) for r in labels} == fraud_ids
    assert all(r[0] == f"{r[1]}:label:fraud" and r[2] == r[1] for r in labels)
    assert {(r[3], r[4]) for r in labels} == {("fraud", "paysim")}
    assert stored_ids(data_dir) == expected_ids | {f"{i}:label:fraud" for i in fraud_ids}


def test_paysim_mapping_translates_columns_as_documented(paysim: PaySimImport) -> None:
    rows, data_dir = paysim.rows, paysim.data_dir
    types = Counter(r["type"] for r in rows)
    channels = dict(
        query(data_dir, "SELECT payload->>'channel', count(*) FROM events GROUP BY ALL")
    )
    assert channels == {
        "atm": types["CASH_IN"] + types["CASH_OUT"],
        "transfer": types["DEBIT"],
        "card_online": types["PAYMENT"],
        "instant_payment": types["TRANSFER"],
        None: 500,  # labels have no channel
    }
    directions = dict(
        query(
            data_dir,
            "SELECT payload->>'direction', count(*) FROM events "
            "WHERE event_type = 'transaction' GROUP BY ALL",
        )
    )
    assert directions == {"credit": types["CASH_IN"], "debit": len(rows) - types["CASH_IN"]}
    # Row 1: every mapped value, and the time: origin + step hours.
    first = rows[0]
    (payload, epoch) = query(
        data_dir,
        "SELECT payload, epoch(occurred_at) FROM events "
        f"WHERE event_id = 'paysim-1-{first['nameOrig']}'",
    )[0]
    event = orjson.loads(str(payload))
    assert event["customer_id"] == event["account_id"] == first["nameOrig"]
    assert event["payee_id"] == event["counterparty_account_id"] == first["nameDest"]
    assert event["amount"] == float(first["amount"])
    assert event["balance_before"] == float(first["oldbalanceOrg"])
    assert event["currency"] == "XXX"
    assert "merchant_id" not in event
    assert epoch == ORIGIN_EPOCH + 3600 * int(first["step"])
    # Every label is dated the mapping's delay after its transaction.
    delays = query(
        data_dir,
        "SELECT epoch(l.occurred_at) - epoch(t.occurred_at), count(*) FROM events l "
        "JOIN events t ON t.event_id = l.payload->>'refers_to_event_id' "
        "WHERE l.event_type = 'label' GROUP BY ALL",
    )
    assert delays == [(LABEL_DELAY_S, 500)]
    # Merchants (names starting with M) are the destinations of PAYMENT rows only.
    merchants = {r["type"] for r in rows if r["nameDest"].startswith("M")}
    assert merchants == {"PAYMENT"}


def test_paysim_reimport_via_cli_is_all_duplicates(paysim: PaySimImport) -> None:
    """The source layer is reopened (ids indexed, state rebuilt): every event is a duplicate."""
    again = ingest(PAYSIM, paysim.project, paysim.data_dir, PAYSIM_MAPPING)

    assert again.exit_code == 0, again.output
    assert summary(again) == (10_000, 0, 10_500, 0)
    assert problem_lines(again) == []
    assert counts_by_type(paysim.data_dir) == {"transaction": 10_000, "label": 500}


# -- (c) bad rows with a mapping ----------------------------------------------------------------
BAD_ROW_PROBLEMS = [
    "  - row 2.amount: 'twelve' is not a number",
    "  - row 3.customer_id: field required",
    "  - row 4.channel: 'CHEQUE' has no entry in the mapping's `map`",
    "  - row 5.direction: 'sideways' is not one of: debit, credit",
    "  - row 6: '01/03/2026 09:25' is not an ISO-8601 timestamp",
    "  - row 7: '2026-03-01T09:30:00' has no timezone; add Z or an offset such as +01:00",
    "  - row 10.amount: '1,000' is not a number",
    "  - row 10.channel: 'PIGEON' has no entry in the mapping's `map`",
]


def test_bad_rows_are_reported_with_row_and_reason_and_good_rows_are_stored(
    tmp_path: Path,
) -> None:
    project, data_dir = init(tmp_path), tmp_path / "state"

    result = ingest(BAD_ROWS, project, data_dir, BAD_ROWS_MAPPING)

    assert result.exit_code == 0, result.output  # bad rows are reported, not fatal
    # Rows are numbered from the first data row (the header is not a row).
    assert summary(result) == (10, 4, 0, 7)
    assert problem_lines(result) == BAD_ROW_PROBLEMS
    assert stored_ids(data_dir) == {"t1", "t8", "t9", "t8:label:fraud"}
    assert counts_by_type(data_dir) == {"transaction": 3, "label": 1}
    # t8 was booked at 09:35+01:00 = 08:35Z; its label arrives the mapping's 1h later.
    label_time = query(
        data_dir, "SELECT epoch(occurred_at) FROM events WHERE event_id = 't8:label:fraud'"
    )
    assert label_time == [(1_772_354_100 + 3600,)]


def test_bad_rows_can_be_fixed_and_the_file_imported_again(tmp_path: Path) -> None:
    """Idempotent on event_id: the good rows of the first import are duplicates the second time."""
    project = init(tmp_path)
    service = service_for(project, MemorySourceLog())
    first = import_with(service, BAD_ROWS, BAD_ROWS_MAPPING)
    fixed = tmp_path / "fixed.csv"
    fixed.write_text(
        BAD_ROWS.read_text()
        .replace("twelve", "12")
        .replace(",,a1", ",c1,a1")
        .replace("CHEQUE", "CARD")
        .replace("sideways", "debit")
        .replace("01/03/2026 09:25", "2026-03-01T09:25:00Z")
        .replace("09:30:00,", "09:30:00Z,")
        .replace('"1,000",PIGEON', "1000,ATM")
    )
    second = import_with(service, fixed, BAD_ROWS_MAPPING)

    assert (first.stored, first.bad) == (4, 7)
    assert (second.rows, second.stored, second.duplicates, second.bad) == (10, 7, 4, 0)
    assert service.source.count() == 11


# -- (d) JSONL of wire-format events, no mapping ------------------------------------------------
def test_jsonl_wire_events_without_mapping_report_bad_lines(tmp_path: Path) -> None:
    project, data_dir = init(tmp_path), tmp_path / "state"

    result = ingest(WIRE_EVENTS, project, data_dir)

    assert result.exit_code == 0, result.output
    assert summary(result) == (8, 3, 1, 4)  # line 7 repeats line 1's event_id
    assert problem_lines(result) == [
        "  - row 2: not valid JSON: unexpected character, expected a string key",
        "  - row 3.amout: unknown field for event type 'transaction'; did you mean 'amount'?",
        "  - row 3.amount: field required",
        "  - row 5: expected a JSON object, got array",
        "  - row 8.type: unknown event type 'transfer' (declared: app_event, device_bind, label, "
        "login, payee_add, profile_change, transaction)",
    ]
    assert stored_ids(data_dir) == {"w1", "w4", "w6"}
    assert counts_by_type(data_dir) == {"transaction": 1, "login": 1, "label": 1}


def test_jsonl_row_numbers_are_line_numbers_across_blank_lines(tmp_path: Path) -> None:
    project = init(tmp_path)
    lines = WIRE_EVENTS.read_text().splitlines()
    file = tmp_path / "gaps.jsonl"
    file.write_text("\n".join([lines[0], "", lines[1]]) + "\n")  # the bad JSON is on line 3

    report = import_with(service_for(project, MemorySourceLog()), file, None)

    assert [p.where for p in report.bad_rows] == ["row 3"]


# -- (e) Parquet imports the same as CSV --------------------------------------------------------
def stored_events(service: DecisionService) -> dict[str, tuple[object, ...]]:
    return {e.event_id: (e.event_type, e.occurred_at, e.payload) for e in service.source.scan()}


@pytest.mark.parametrize(
    ("source", "mapping", "typed"),
    [
        pytest.param(PAYSIM, PAYSIM_MAPPING, True, marks=needs_paysim, id="paysim-typed"),
        pytest.param(BAD_ROWS, BAD_ROWS_MAPPING, False, id="bad-rows-text"),
    ],
)
def test_parquet_imports_the_same_as_csv(
    tmp_path: Path, source: Path, mapping: Path, typed: bool
) -> None:
    # Typed: polars infers int and float columns, so the mapping converts numbers, not text.
    # (The first 2,000 PaySim rows: the same code path as 10,000, at a fifth of the time.)
    frame = pl.read_csv(source, infer_schema=typed).head(2000)
    csv_file, parquet = tmp_path / f"{source.stem}.csv", tmp_path / f"{source.stem}.parquet"
    frame.write_csv(csv_file)
    frame.write_parquet(parquet)
    if typed:
        assert frame.schema["amount"] == pl.Float64
        assert frame.schema["step"] == pl.Int64
    project = init(tmp_path)
    from_csv = service_for(project, MemorySourceLog())
    from_parquet = service_for(project, MemorySourceLog())

    csv_report = import_with(from_csv, csv_file, mapping)
    parquet_report = import_with(from_parquet, parquet, mapping)

    assert parquet_report == csv_report
    assert parquet_report.stored > 0
    assert stored_events(from_parquet) == stored_events(from_csv)


def test_parquet_via_cli(tmp_path: Path) -> None:
    project, data_dir = init(tmp_path), tmp_path / "state"
    parquet = tmp_path / "bad_rows.parquet"
    pl.read_csv(BAD_ROWS, infer_schema=False).write_parquet(parquet)

    result = ingest(parquet, project, data_dir, BAD_ROWS_MAPPING)

    assert result.exit_code == 0, result.output
    assert summary(result) == (10, 4, 0, 7)
    assert problem_lines(result) == BAD_ROW_PROBLEMS


# -- (f) mapping errors -------------------------------------------------------------------------
def mapping_error(tmp_path: Path, text: str) -> tuple[Result, Path]:
    project = init(tmp_path)
    file = tmp_path / "mapping.yaml"
    file.write_text(text)
    result = ingest(BAD_ROWS, project, tmp_path / "state", file)
    return result, file


def position(file: Path, needle: str) -> tuple[int, int]:
    """1-based line and column of the first occurrence of ``needle`` in ``file``."""
    for number, line in enumerate(file.read_text().splitlines(), start=1):
        if needle in line:
            return number, line.index(needle) + 1
    raise AssertionError(f"{needle!r} not in {file}")


MISSPELT_FIELD = """\
event_type: transaction
event_id: "{txn_id}"
occurred_at: {column: booked_at}
fields:
  customer_id: {column: customer}
  ammount: {column: amount}
"""


def test_mapping_with_unknown_field_fails_with_exit_2_naming_the_field(tmp_path: Path) -> None:
    result, file = mapping_error(tmp_path, MISSPELT_FIELD)
    line, column = position(file, "{column: amount}")

    assert result.exit_code == 2
    assert plain(result.stderr).splitlines() == [
        "error DL330: mapping does not fit the project",
        f"  - {file}:{line}:{column} fields.ammount: 'transaction' has no such field; "
        "did you mean 'amount'?",
    ]
    assert counts_by_type(tmp_path / "state") == {}  # nothing imported


def test_mapping_with_unknown_field_points_at_the_file_line_and_column(tmp_path: Path) -> None:
    result, file = mapping_error(tmp_path, MISSPELT_FIELD)
    line, column = position(file, "{column: amount}")

    assert result.exit_code == 2
    assert f"  - {file}:{line}:{column} fields.ammount: " in plain(result.stderr)


def test_mapping_yaml_syntax_error_fails_with_exit_2_and_the_location(tmp_path: Path) -> None:
    text = MISSPELT_FIELD.replace("{column: booked_at}", "{column: booked_at")
    result, file = mapping_error(tmp_path, text)
    # The flow mapping `{column: booked_at` is never closed: PyYAML stops at the ':' after
    # `fields` on the next line, the first token that cannot continue it.
    line, column = position(file, "fields:")
    column += len("fields")

    assert result.exit_code == 2
    assert plain(result.stderr).splitlines() == [
        "error DL330: mapping is not valid YAML",
        f"  - {file}:{line}:{column}: YAML syntax: expected ',' or '}}', but got ':'",
    ]


def test_mapping_shape_errors_are_located(tmp_path: Path) -> None:
    text = (
        MISSPELT_FIELD.replace("ammount", "amount").replace(
            "{column: booked_at}", "{column: booked_at, unit: weeks}"
        )
        + "  currency: {vaule: EUR}\n"
    )
    result, file = mapping_error(tmp_path, text)
    unit = position(file, "weeks")
    vaule = position(file, "EUR")

    assert result.exit_code == 2
    assert plain(result.stderr).splitlines() == [
        "error DL330: mapping is invalid",
        f"  - {file}:{unit[0]}:{unit[1]} occurred_at.unit: Input should be 'iso', 'seconds', "
        "'minutes', 'hours' or 'days'",
        f"  - {file}:{vaule[0]}:{vaule[1]} fields.currency.vaule: Extra inputs are not permitted",
    ]


# -- src bugs found while testing the mapping ---------------------------------------------------
def test_empty_event_id_column_is_a_bad_row(tmp_path: Path) -> None:
    project = init(tmp_path)
    file = tmp_path / "no_ids.csv"
    lines = BAD_ROWS.read_text().splitlines()
    file.write_text("\n".join([lines[0], lines[1], "," + lines[9].split(",", 1)[1]]) + "\n")

    report = import_with(service_for(project, MemorySourceLog()), file, BAD_ROWS_MAPPING)

    assert report.stored == 1
    assert [p.where for p in report.bad_rows] == ["row 2"]


def test_a_label_that_fails_validation_is_a_bad_row_not_an_aborted_import(
    tmp_path: Path,
) -> None:
    project = init(tmp_path)
    file = tmp_path / "long_id.csv"
    lines = BAD_ROWS.read_text().splitlines()
    long_id = "t" * 120  # a valid event id (<= 128) whose label id ("...:label:fraud") is not
    file.write_text("\n".join([lines[0], long_id + lines[8][2:], lines[9]]) + "\n")

    service = service_for(project, MemorySourceLog())
    report = import_with(service, file, BAD_ROWS_MAPPING)

    assert report.rows == 2
    assert report.bad == 1
    assert "t9" in stored_events(service)


def test_a_row_dated_ahead_of_the_clock_is_a_bad_row(tmp_path: Path) -> None:
    project = init(tmp_path)
    first = WIRE_EVENTS.read_text().splitlines()[0]
    ahead = orjson.loads(first)
    ahead.update(event_id="ahead-1", occurred_at="2999-01-01T00:00:00+00:00")
    file = tmp_path / "ahead.jsonl"
    file.write_text(first + "\n" + orjson.dumps(ahead).decode() + "\n")

    report = import_with(service_for(project, MemorySourceLog()), file, None)

    assert report.stored == 1
    (problem,) = report.bad_rows
    assert problem.where == "row 2.occurred_at"
    assert "ahead of the service clock" in problem.reason
