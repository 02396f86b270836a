"""Ingest against the contract: refused files, quarantined rows with reasons, counts that add up."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path

import polars as pl
import pytest

from configs.settings import Settings
from features.contract import TABLES
from features.ingest import IngestRefused, ingest
from features.tables import read_table

NOW = datetime(2026, 11, 1, tzinfo=UTC)


def _write(folder: Path, table: str, rows: list[dict], fmt: str = "parquet") -> Path:
    frame = pl.DataFrame(rows, schema=TABLES[table].polars_schema if fmt == "parquet" else None)
    path = folder / f"{table}.{fmt}"
    folder.mkdir(parents=True, exist_ok=True)
    frame.write_parquet(path) if fmt == "parquet" else frame.write_csv(path)
    return path


def _ts(day: int, hour: int = 12) -> datetime:
    return datetime(2026, 10, day, hour, tzinfo=UTC)


def _base_tables(folder: Path) -> None:
    _write(
        folder,
        "fx_rates",
        [
            {"date": date(2026, 10, 1), "currency": "USD", "usd_per_unit": 1.0},
            {"date": date(2026, 10, 1), "currency": "EUR", "usd_per_unit": 1.08},
        ],
    )
    _write(
        folder,
        "markets",
        [
            {
                "market_id": "US",
                "name": "United States",
                "country": "US",
                "currency": "USD",
                "timezone": "America/New_York",
                "language": "en-US",
            },
            {
                "market_id": "DE",
                "name": "Germany",
                "country": "DE",
                "currency": "EUR",
                "timezone": "Europe/Berlin",
                "language": "de-DE",
            },
        ],
    )
    _write(
        folder,
        "users",
        [
            {"user_id": "u1", "market_id": "US", "signup_ts": _ts(1)},
            {"user_id": "u2", "market_id": "DE", "signup_ts": _ts(1)},
            {"user_id": "u3", "market_id": "FR", "signup_ts": _ts(1)},  # unknown market
        ],
    )
    _write(
        folder,
        "products",
        [
            {
                "product_id": "p1",
                "title": "Kettle",
                "category": "home",
                "brand": "Acme",
                "price": 30.0,
                "currency": "USD",
                "created_ts": _ts(1),
            },
            {
                "product_id": "p2",
                "title": "Mug",
                "category": "home",
                "brand": "Acme",
                "price": 0.0,
                "currency": "USD",
                "created_ts": _ts(1),
            },  # zero price
        ],
    )


def _event(event_id: str, **overrides: object) -> dict:
    row = {
        "event_id": event_id,
        "event_ts": _ts(5),
        "user_id": "u1",
        "product_id": "p1",
        "market_id": "US",
        "event_type": "purchase",
        "quantity": 1,
        "price": 30.0,
        "currency": "USD",
        "channel": "web",
    }
    row.update(overrides)
    return row


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data")


def test_bad_rows_go_to_quarantine_with_reasons_and_counts_add_up(settings: Settings, tmp_path: Path) -> None:
    raw = tmp_path / "drop"
    _base_tables(raw)
    _write(
        raw,
        "events",
        [
            _event("e1"),
            _event("e2", user_id="nobody"),
            _event("e3", price=-5.0),
            _event("e4", event_ts=datetime(2027, 1, 1, tzinfo=UTC)),
            _event("e5", currency="XYZ"),
            _event("e6", event_type="click"),
            _event("e1"),  # exact duplicate of the first
            _event("e7", product_id="p2"),  # p2 was quarantined, so it is unknown here
            _event("e8", user_id=None),
        ],
    )
    report = ingest(settings, raw, now=NOW, progress=False)

    by_table = {result.table: result for result in report.results}
    assert by_table["users"].reasons == {"unknown market_id": 1}
    assert by_table["products"].reasons == {"zero or negative price": 1}
    events = by_table["events"]
    assert events.rows_in == 9 and events.accepted == 1 and events.quarantined == 8
    assert events.reasons == {
        "unknown user_id": 1,
        "zero or negative price": 1,
        "future event_ts": 1,
        "unknown currency": 1,
        "unknown event_type": 1,
        "exact duplicate": 1,
        "unknown product_id": 1,
        "missing user_id": 1,
    }
    for result in report.results:
        assert result.rows_in == result.accepted + result.quarantined

    accepted = read_table(settings.contract_dir, "events")
    assert accepted.get_column("event_id").to_list() == ["e1"]
    assert accepted.schema == pl.Schema(TABLES["events"].polars_schema)
    quarantine = pl.read_parquet(settings.quarantine_dir / "events" / "drop.parquet")
    assert set(quarantine.get_column("event_id")) == {"e1", "e2", "e3", "e4", "e5", "e6", "e7", "e8"}
    assert {"reason", "reasons", "source_file", "source_row"} <= set(quarantine.columns)
    # the duplicate is the second e1 (row 6), the first one was accepted
    assert quarantine.filter(pl.col("reason") == "exact duplicate").get_column("source_row").to_list() == [6]

    log = [json.loads(line) for line in (settings.root / "ingest_log.jsonl").read_text().splitlines()]
    assert {entry["table"] for entry in log} == {"fx_rates", "markets", "users", "products", "events"}


def test_a_row_breaking_several_rules_lists_them_all(settings: Settings, tmp_path: Path) -> None:
    raw = tmp_path / "drop"
    _base_tables(raw)
    _write(raw, "events", [_event("e1", price=0.0, currency="XYZ", user_id="nobody")])
    ingest(settings, raw, now=NOW, progress=False)
    row = pl.read_parquet(settings.quarantine_dir / "events" / "drop.parquet").row(0, named=True)
    assert row["reason"] == "unknown user_id"
    assert row["reasons"] == "unknown user_id; zero or negative price; unknown currency"


def test_missing_column_refuses_the_file_and_writes_nothing(settings: Settings, tmp_path: Path) -> None:
    raw = tmp_path / "drop"
    _base_tables(raw)
    pl.DataFrame([_event("e1")]).drop("price").write_parquet(raw / "events.parquet")
    with pytest.raises(IngestRefused) as refused:
        ingest(settings, raw, now=NOW, progress=False)
    message = str(refused.value)
    assert message.count("\n") == 0
    assert "events.parquet" in message and "missing column 'price'" in message
    assert not settings.contract_dir.exists()


def test_mistyped_column_refuses_the_file(settings: Settings, tmp_path: Path) -> None:
    raw = tmp_path / "drop"
    _base_tables(raw)
    pl.DataFrame([_event("e1")]).with_columns(pl.lit(True).alias("event_ts")).write_parquet(
        raw / "events.parquet"
    )
    with pytest.raises(IngestRefused, match=r"events\.parquet: column 'event_ts' is mistyped"):
        ingest(settings, raw, now=NOW, progress=False)


def test_csv_text_column_with_no_readable_value_is_mistyped(settings: Settings, tmp_path: Path) -> None:
    raw = tmp_path / "drop"
    _base_tables(raw)
    _write(raw, "events", [_event("e1", quantity="many"), _event("e2", quantity="lots")], fmt="csv")
    with pytest.raises(IngestRefused, match=r"column 'quantity' is mistyped: expected Int64.*'many'"):
        ingest(settings, raw, now=NOW, progress=False)


def test_csv_unreadable_values_are_quarantined_and_types_follow_the_contract(
    settings: Settings, tmp_path: Path
) -> None:
    raw = tmp_path / "drop"
    _base_tables(raw)
    rows = [
        _event("e1", event_ts="2026-10-05T12:00:00Z"),
        _event("e2", event_ts="2026-10-05 14:00:00", quantity="2"),
        _event("e3", event_ts="2026-10-05T12:00:00+02:00", price="abc"),
        _event("e4", quantity="1.5"),
    ]
    _write(raw, "events", [{k: str(v) for k, v in row.items()} for row in rows], fmt="csv")
    report = ingest(settings, raw, now=NOW, progress=False)
    events = next(r for r in report.results if r.table == "events")
    assert events.reasons == {"unreadable price": 1, "unreadable quantity": 1}
    accepted = read_table(settings.contract_dir, "events").sort("event_id")
    assert accepted.get_column("event_ts").to_list() == [_ts(5, 12), _ts(5, 14)]
    assert accepted.get_column("quantity").to_list() == [1, 2]


def test_reingesting_a_partition_is_idempotent_and_keys_clash_across_partitions(
    settings: Settings, tmp_path: Path
) -> None:
    raw = tmp_path / "day1"
    _base_tables(raw)
    _write(raw, "events", [_event("e1"), _event("e2", price=-1.0)])
    ingest(settings, raw, now=NOW, progress=False)
    ingest(settings, raw, now=NOW, progress=False)
    assert read_table(settings.contract_dir, "events").height == 1
    assert pl.read_parquet(settings.quarantine_dir / "events" / "day1.parquet").height == 1

    later = tmp_path / "day2"
    _write(later, "events", [_event("e1"), _event("e9")])
    report = ingest(settings, later, now=NOW, progress=False)
    assert report.results[0].reasons == {"duplicate event_id": 1}
    assert sorted(read_table(settings.contract_dir, "events").get_column("event_id")) == ["e1", "e9"]


def test_table_rules_across_columns(settings: Settings, tmp_path: Path) -> None:
    raw = tmp_path / "drop"
    _base_tables(raw)
    _write(
        raw,
        "promotions",
        [
            {
                "product_id": "p1",
                "market_id": "US",
                "start_date": date(2026, 12, 1),
                "end_date": date(2026, 12, 3),
                "discount": 0.2,
            },  # planned ahead: a future date is fine here
            {
                "product_id": "p1",
                "market_id": "DE",
                "start_date": date(2026, 12, 1),
                "end_date": date(2026, 11, 3),
                "discount": 0.2,
            },
            {
                "product_id": "p1",
                "market_id": "US",
                "start_date": date(2026, 10, 1),
                "end_date": date(2026, 10, 3),
                "discount": 1.0,
            },
        ],
    )
    report = ingest(settings, raw, now=NOW, progress=False)
    promotions = next(r for r in report.results if r.table == "promotions")
    assert promotions.accepted == 1
    assert promotions.reasons == {"end_date before start_date": 1, "discount of 100% or more": 1}


def test_unknown_table_file_and_empty_folder_are_refused(settings: Settings, tmp_path: Path) -> None:
    stray = tmp_path / "orders.csv"
    stray.write_text("a,b\n1,2\n")
    with pytest.raises(IngestRefused, match="does not name a contract table"):
        ingest(settings, stray, progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(IngestRefused, match="no raw files"):
        ingest(settings, tmp_path / "empty", progress=False)
