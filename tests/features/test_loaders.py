"""Real-data loaders: contract-shaped raw tables, every source row kept, the data sets' mess flagged.

Tests marked `realdata` read ../shared/data and skip when it is absent; the synthetic Online Retail
test and the reference-table tests run everywhere.
"""

from __future__ import annotations

import zoneinfo
from datetime import UTC, date, datetime
from pathlib import Path

import holidays
import polars as pl
import pytest

from configs import InputError
from configs.settings import Settings
from features.contract import LOADER_REJECT_COLUMN, TABLES
from features.ingest import ingest
from features.loaders import DATASETS, default_source, detect_dataset, online_retail
from features.loaders.countries import COUNTRIES, markets_frame
from features.loaders.fx import USD_PER_UNIT, daily_fx_rates
from features.loaders.raw import LoadSummary, conform_to_contract

ONLINE_RETAIL_FILE = "online_retail_2010-12_2011-12.parquet"


def _source_or_skip(name: str) -> Path:
    source = default_source(name)
    if not source.exists():
        pytest.skip(f"real data not available: {source}")
    return source


def _load(name: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[LoadSummary, Path]:
    source = _source_or_skip(name)
    raw_dir = tmp_path_factory.mktemp(name) / "raw"
    return DATASETS[name](source, raw_dir), raw_dir


@pytest.fixture(scope="module")
def online_retail_raw(tmp_path_factory: pytest.TempPathFactory) -> tuple[LoadSummary, Path]:
    return _load("online-retail", tmp_path_factory)


@pytest.fixture(scope="module")
def movielens_raw(tmp_path_factory: pytest.TempPathFactory) -> tuple[LoadSummary, Path]:
    return _load("movielens-100k", tmp_path_factory)


@pytest.fixture(scope="module")
def walmart_raw(tmp_path_factory: pytest.TempPathFactory) -> tuple[LoadSummary, Path]:
    return _load("walmart", tmp_path_factory)


@pytest.fixture(scope="module")
def ipinyou_raw(tmp_path_factory: pytest.TempPathFactory) -> tuple[LoadSummary, Path]:
    return _load("ipinyou", tmp_path_factory)


def _read(raw_dir: Path, table: str, partition: str) -> pl.DataFrame:
    return pl.read_parquet(raw_dir / table / f"{partition}.parquet")


def _assert_contract_shape(path: Path) -> None:
    """Exactly the contract's columns, order and types; `_reject_reason` (text) only as the last column."""
    frame = pl.read_parquet(path)
    schema = TABLES[path.parent.name]
    expected = list(schema.polars_schema.items())
    actual = list(frame.schema.items())
    if actual and actual[-1][0] == LOADER_REJECT_COLUMN:
        assert actual[-1][1] == pl.String, path
        actual = actual[:-1]
    assert actual == expected, path


def _assert_all_contract_shaped(summary: LoadSummary) -> None:
    contract_files = [path for path in summary.files if path.parent.name in TABLES]
    assert contract_files
    for path in contract_files:
        _assert_contract_shape(path)


def _assert_references_hold(raw_dir: Path, partition: str, table: str) -> None:
    """Every id the table references exists in this load's own output (nothing left dangling)."""
    frame = _read(raw_dir, table, partition)
    for column in TABLES[table].columns:
        if column.references:
            values = frame.get_column(column.name).drop_nulls()
            if values.is_empty():  # e.g. iPinYou's auctions: no marketplace user is known
                continue
            target_table, target_column = column.references.split(".")
            known = _read(raw_dir, target_table, partition).get_column(target_column)
            assert values.is_in(known.implode()).all(), f"{table}.{column.name} -> {column.references}"


# ---------------------------------------------------------------------------------------------
# Online Retail


@pytest.mark.realdata
def test_online_retail_known_facts(online_retail_raw: tuple[LoadSummary, Path]) -> None:
    summary, raw_dir = online_retail_raw
    _assert_all_contract_shaped(summary)
    events = _read(raw_dir, "events", "online-retail")
    users = _read(raw_dir, "users", "online-retail")

    assert summary.source_rows == 541_909
    assert summary.rows_written["events"] == events.height == 541_909  # every line became an event
    assert events.get_column("event_id").n_unique() == events.height
    assert users.height == users.get_column("user_id").n_unique() == 4_372
    assert events.get_column("market_id").n_unique() == 38  # 36 countries + 2 unmapped names
    assert summary.rows_written["markets"] == 36
    assert summary.rows_written["products"] == 3_958  # 4,070 stock codes, 112 differ only in case
    assert set(events.get_column("currency").unique()) == {"GBP"}

    first = events.row(0, named=True)
    assert first["event_id"] == "or-536365-1"
    assert first["event_ts"] == datetime(2010, 12, 1, 8, 26, tzinfo=UTC)  # GMT: UTC+0
    assert (first["user_id"], first["product_id"], first["market_id"]) == ("or-17850", "or-85123A", "GB")


@pytest.mark.realdata
def test_online_retail_flags_the_mess(online_retail_raw: tuple[LoadSummary, Path]) -> None:
    summary, raw_dir = online_retail_raw
    flagged = summary.rows_flagged["events"]
    assert flagged[online_retail.CANCELLATION] == 9_288  # every invoice starting with C
    assert flagged[online_retail.STOCK_ADJUSTMENT] == 1_336
    assert 100_000 < flagged[online_retail.MISSING_CUSTOMER] < 135_080  # some have an earlier reason
    assert 5_000 < flagged[online_retail.DUPLICATE_LINE] <= 5_268
    assert flagged["non-product stock code POST"] > 1_000
    assert flagged[online_retail.GIFT_VOUCHER_REASON] > 0
    assert "non-product stock code POST" in summary.rows_flagged["products"]

    events = _read(raw_dir, "events", "online-retail")
    reasons = events.get_column(LOADER_REJECT_COLUMN)
    assert reasons.null_count() == events.height - sum(flagged.values())
    assert reasons.drop_nulls().value_counts().height == len(flagged)


@pytest.mark.realdata
def test_online_retail_tables_hang_together(online_retail_raw: tuple[LoadSummary, Path]) -> None:
    _, raw_dir = online_retail_raw
    events = _read(raw_dir, "events", "online-retail")
    users = _read(raw_dir, "users", "online-retail")
    markets = _read(raw_dir, "markets", "online-retail")
    fx = _read(raw_dir, "fx_rates", "online-retail")

    # only the two non-countries lack a market (ingest quarantines them as unknown market_id)
    known_markets = markets.get_column("market_id").implode()
    unmapped = events.filter(~pl.col("market_id").is_in(known_markets))
    assert set(unmapped.get_column("market_id").unique()) == {"Unspecified", "European Community"}
    assert users.filter(~pl.col("market_id").is_in(known_markets)).height == 5  # no other country
    # every product and every known customer of an event exists
    products = _read(raw_dir, "products", "online-retail").get_column("product_id")
    assert events.get_column("product_id").is_in(products.implode()).all()
    assert events.get_column("user_id").drop_nulls().is_in(users.get_column("user_id").implode()).all()

    # a rate for every currency on every day of the data
    days = events.get_column("event_ts").dt.date()
    currencies = {"GBP", *markets.get_column("currency")}
    assert set(fx.get_column("currency").unique()) == currencies
    assert fx.height == len(currencies) * ((days.max() - days.min()).days + 1)


@pytest.mark.realdata
def test_online_retail_summer_time_becomes_utc(online_retail_raw: tuple[LoadSummary, Path]) -> None:
    _, raw_dir = online_retail_raw
    events = _read(raw_dir, "events", "online-retail")
    # invoice 555156 was written 2011-06-01 07:37 London summer time (UTC+1)
    line = events.filter(pl.col("event_id") == "or-555156-1").row(0, named=True)
    assert line["event_ts"] == datetime(2011, 6, 1, 6, 37, tzinfo=UTC)


def _online_retail_line(
    invoice: str,
    code: str,
    quantity: int,
    when: datetime,
    price: float = 2.5,
    customer: float | None = 17850.0,
    country: str = "United Kingdom",
    description: str = "WHITE HANGING HEART T-LIGHT HOLDER",
) -> dict[str, object]:
    return {
        "InvoiceNo": invoice,
        "StockCode": code,
        "Description": description,
        "Quantity": quantity,
        "InvoiceDate": when,
        "UnitPrice": price,
        "CustomerID": customer,
        "Country": country,
    }


def test_online_retail_mapping_on_a_synthetic_file(tmp_path: Path) -> None:
    winter, summer = datetime(2011, 1, 10, 9, 0), datetime(2011, 7, 10, 9, 0)
    lines = [
        _online_retail_line("536365", "85123A", 6, winter),
        _online_retail_line("536365", "85123a", 2, winter),  # same item, lower-case code
        _online_retail_line("536366", "22633", 3, summer, customer=12583.0, country="EIRE",
                            description="HAND WARMER UNION JACK"),
        _online_retail_line("C536379", "85123A", -1, winter),
        _online_retail_line("536380", "22633", 1, winter, customer=None),
        _online_retail_line("536381", "POST", 1, winter, price=18.0, description="POSTAGE"),
        _online_retail_line("536382", "22633", -5, winter, price=0.0, customer=None, description="damaged"),
        _online_retail_line("536383", "22633", 2, winter, customer=12583.0, country="Unspecified"),
        _online_retail_line("536365", "85123A", 6, winter),  # exact copy of the first line
    ]  # fmt: skip
    source = tmp_path / "source" / "lines.parquet"
    source.parent.mkdir()
    pl.DataFrame(lines).write_parquet(source)
    raw_dir = tmp_path / "raw"

    summary = online_retail.load(source, raw_dir)

    assert detect_dataset(source) == detect_dataset(source.parent) == "online-retail"
    assert summary.source_rows == summary.rows_written["events"] == len(lines)
    _assert_all_contract_shaped(summary)
    events = _read(raw_dir, "events", "online-retail")
    assert events.get_column("event_id").to_list()[:3] == ["or-536365-1", "or-536365-2", "or-536366-1"]
    assert events.get_column(LOADER_REJECT_COLUMN).to_list() == [
        None,
        None,
        None,
        online_retail.CANCELLATION,
        online_retail.MISSING_CUSTOMER,
        "non-product stock code POST",
        online_retail.STOCK_ADJUSTMENT,
        None,  # unknown country: left to ingest's "unknown market_id"
        online_retail.DUPLICATE_LINE,
    ]
    # UK local time to UTC: GMT in January, BST (UTC+1) in July
    assert events.get_column("event_ts").to_list()[:3] == [
        datetime(2011, 1, 10, 9, 0, tzinfo=UTC),
        datetime(2011, 1, 10, 9, 0, tzinfo=UTC),
        datetime(2011, 7, 10, 8, 0, tzinfo=UTC),
    ]
    assert events.get_column("market_id").to_list()[2] == "IE"
    assert events.get_column("market_id").to_list()[7] == "Unspecified"

    markets = _read(raw_dir, "markets", "online-retail")
    assert markets.get_column("market_id").to_list() == ["GB", "IE"]
    products = _read(raw_dir, "products", "online-retail").sort("product_id")
    assert products.get_column("product_id").to_list() == ["or-22633", "or-85123A", "or-POST"]
    holder = products.row(1, named=True)
    assert holder["title"] == "WHITE HANGING HEART T-LIGHT HOLDER"
    assert holder["category"] == "candles and lighting"
    assert holder["price"] == 2.5 and holder["currency"] == "GBP"
    assert products.row(2, named=True)[LOADER_REJECT_COLUMN] == "non-product stock code POST"
    users = _read(raw_dir, "users", "online-retail").sort("user_id")
    # 12583 has one line in Ireland and one Unspecified: the real country wins
    assert users.rows() == [
        ("or-12583", "IE", datetime(2011, 1, 10, 9, 0, tzinfo=UTC)),
        ("or-17850", "GB", datetime(2011, 1, 10, 9, 0, tzinfo=UTC)),
    ]
    fx = _read(raw_dir, "fx_rates", "online-retail")
    assert set(fx.get_column("currency").unique()) == {"GBP", "EUR"}


def test_online_retail_refuses_a_file_without_its_columns(tmp_path: Path) -> None:
    path = tmp_path / "other.parquet"
    pl.DataFrame({"InvoiceNo": ["1"], "Quantity": [1]}).write_parquet(path)
    with pytest.raises(InputError) as refused:
        online_retail.load(path, tmp_path / "raw")
    # one line naming the file and each missing column under Online Retail II's name and the old one
    assert str(refused.value) == (
        f"{path}: not Online Retail, missing column(s) 'StockCode', 'Description', 'InvoiceDate', "
        "'Price' (or 'UnitPrice'), 'Customer ID' (or 'CustomerID'), 'Country'; "
        "the file has: InvoiceNo, Quantity"
    )
    assert not (tmp_path / "raw").exists()


# Online Retail II: Invoice, Price and Customer ID instead of InvoiceNo, UnitPrice and CustomerID;
# InvoiceDate as text in its CSV export
def _online_retail_ii_lines() -> list[dict[str, object]]:
    winter, summer = datetime(2010, 1, 10, 9, 0), datetime(2010, 7, 10, 9, 0)
    return [
        _online_retail_line("489434", "85048", 12, winter, customer=13085.0),
        _online_retail_line("489434", "79323P", 12, winter, customer=13085.0,
                            description="PINK CHERRY LIGHTS"),
        _online_retail_line("489435", "22350", 12, summer, customer=13086.0, country="France",
                            description="CAT BOWL"),
        _online_retail_line("C489449", "22087", -12, winter, customer=16321.0),
        _online_retail_line("489436", "22350", 4, winter, customer=None),
        _online_retail_line("489437", "POST", 1, winter, price=18.0, customer=13085.0, description="POSTAGE"),
        _online_retail_line("489434", "85048", 12, winter, customer=13085.0),  # copy of the first line
    ]  # fmt: skip


def _write_online_retail(lines: list[dict[str, object]], path: Path, naming: str) -> None:
    frame = pl.DataFrame(lines)
    if naming == "II":
        frame = frame.rename(online_retail.RENAMED_IN_II)
    if path.suffix == ".csv":  # as text, the way the CSV exports write it
        frame = frame.with_columns(pl.col("InvoiceDate").dt.strftime("%Y-%m-%d %H:%M:%S"))
        frame.write_csv(path)
    else:
        frame.write_parquet(path)


@pytest.mark.parametrize(
    ("naming", "file_name"),
    [("II", "online_retail_II.csv"), ("first", "online_retail.csv"), ("II", "online_retail_II.parquet")],
)
def test_online_retail_ii_reads_either_naming_and_text_dates(
    tmp_path: Path, naming: str, file_name: str
) -> None:
    lines = _online_retail_ii_lines()
    source = tmp_path / "source" / file_name
    source.parent.mkdir()
    _write_online_retail(lines, source, naming)
    reference = tmp_path / "reference.parquet"  # the first release's naming and types
    _write_online_retail(lines, reference, "first")

    summary = online_retail.load(source, tmp_path / "raw")
    online_retail.load(reference, tmp_path / "reference-raw")

    assert detect_dataset(source) == detect_dataset(source.parent) == "online-retail"
    assert summary.source_rows == summary.rows_written["events"] == len(lines)
    _assert_all_contract_shaped(summary)
    # the same contract tables, row for row, as the first release's parquet gives
    for table in ("events", "users", "products", "markets"):
        assert _read(tmp_path / "raw", table, "online-retail").equals(
            _read(tmp_path / "reference-raw", table, "online-retail")
        ), table
    events = _read(tmp_path / "raw", "events", "online-retail")
    assert events.get_column("event_id").to_list()[:3] == ["or-489434-1", "or-489434-2", "or-489435-1"]
    assert events.get_column("user_id").to_list()[:4] == ["or-13085", "or-13085", "or-13086", "or-16321"]
    assert events.get_column("event_ts").to_list()[2] == datetime(2010, 7, 10, 8, 0, tzinfo=UTC)  # BST
    assert events.get_column(LOADER_REJECT_COLUMN).to_list() == [
        None,
        None,
        None,
        online_retail.CANCELLATION,
        online_retail.MISSING_CUSTOMER,
        "non-product stock code POST",
        online_retail.DUPLICATE_LINE,
    ]


def test_online_retail_ii_ingest_balances_to_the_row(tmp_path: Path) -> None:
    source = tmp_path / "online_retail_II.csv"
    _write_online_retail(_online_retail_ii_lines(), source, "II")
    settings = Settings(data_dir=tmp_path / "data")
    online_retail.load(source, settings.raw_dir)

    report = ingest(settings, settings.raw_dir, progress=False)

    events = next(result for result in report.results if result.table == "events")
    assert (events.rows_in, events.accepted, events.quarantined) == (7, 3, 4)
    assert report.rows_in == report.accepted + report.quarantined


def test_online_retail_flags_a_value_it_cannot_read_and_refuses_a_column_of_them(tmp_path: Path) -> None:
    header = "Invoice,StockCode,Description,Quantity,InvoiceDate,Price,Customer ID,Country\n"
    good = "489434,85048,LIGHTS,12,2009-12-01 07:45:00,6.95,13085,United Kingdom\n"
    source = tmp_path / "lines.csv"
    source.write_text(
        header
        + good
        + "489434,22064,MUG,six,2009-12-01 07:45:00,1.25,13085,United Kingdom\n"
        + "489435,22064,MUG,6,1.12.2009 07:45,1.25,13085,United Kingdom\n"
    )
    online_retail.load(source, tmp_path / "raw")
    reasons = _read(tmp_path / "raw", "events", "online-retail").get_column(LOADER_REJECT_COLUMN)
    assert reasons.to_list() == [None, "unreadable Quantity", "unreadable InvoiceDate"]

    bad_dates = tmp_path / "bad_dates.csv"
    bad_dates.write_text(header + good.replace("2009-12-01 07:45:00", "01.12.2009 07:45"))
    with pytest.raises(InputError) as refused:
        online_retail.load(bad_dates, tmp_path / "raw2")
    assert str(refused.value) == (
        f"{bad_dates}: column 'InvoiceDate': no value can be read as a date-time such as "
        "2010-12-01 08:26:00 (first value '01.12.2009 07:45')"
    )


def test_online_retail_ii_workbook_with_a_sheet_per_year(tmp_path: Path) -> None:
    pytest.importorskip("fastexcel", reason="polars reads Excel through fastexcel, not installed")
    pytest.importorskip("xlsxwriter", reason="polars writes Excel through xlsxwriter, not installed")
    import xlsxwriter

    lines = _online_retail_ii_lines()
    source = tmp_path / "online_retail_II.xlsx"
    frame = pl.DataFrame(lines).rename(online_retail.RENAMED_IN_II)
    with xlsxwriter.Workbook(source) as workbook:
        frame.head(3).write_excel(workbook, worksheet="Year 2009-2010")
        frame.tail(len(lines) - 3).write_excel(workbook, worksheet="Year 2010-2011")

    summary = online_retail.load(source, tmp_path / "raw")

    assert summary.source_rows == len(lines)
    events = _read(tmp_path / "raw", "events", "online-retail")
    assert events.get_column("event_id").to_list()[:3] == ["or-489434-1", "or-489434-2", "or-489435-1"]


def test_online_retail_without_an_excel_reader_says_what_to_do(tmp_path: Path) -> None:
    try:
        import fastexcel  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("fastexcel is installed: Excel is read")
    source = tmp_path / "online_retail_II.xlsx"
    source.write_bytes(b"PK\x03\x04")  # the start of a zip: what an .xlsx is
    with pytest.raises(InputError) as refused:
        online_retail.load(source, tmp_path / "raw")
    assert str(refused.value) == (
        f"{source}: reading Excel needs a package that is not installed (required package 'fastexcel' "
        "not found.); save each sheet as CSV and ingest those"
    )


# ---------------------------------------------------------------------------------------------
# MovieLens, Walmart, iPinYou


@pytest.mark.realdata
def test_movielens_known_facts(movielens_raw: tuple[LoadSummary, Path]) -> None:
    summary, raw_dir = movielens_raw
    _assert_all_contract_shaped(summary)
    events = _read(raw_dir, "events", "movielens-100k")
    assert summary.source_rows == events.height == 100_000
    assert summary.rows_written["users"] == 943
    assert summary.rows_written["products"] == 1_682
    assert summary.rows_flagged == {}
    assert events.get_column("event_id").n_unique() == 100_000
    first = events.row(0, named=True)
    assert (first["user_id"], first["product_id"]) == ("ml-196", "ml-242")
    assert first["event_ts"] == datetime.fromtimestamp(881250949, tz=UTC)
    assert (first["event_type"], first["quantity"], first["price"]) == ("purchase", 1, None)
    for table in ("users", "events"):
        _assert_references_hold(raw_dir, "movielens-100k", table)

    products = _read(raw_dir, "products", "movielens-100k")
    toy_story = products.filter(pl.col("product_id") == "ml-1").row(0, named=True)
    assert (toy_story["title"], toy_story["category"]) == ("Toy Story (1995)", "Animation")

    ratings = _read(raw_dir, "movielens_ratings", "movielens-100k")
    assert ratings.columns == ["user_id", "product_id", "rating", "event_ts"]
    assert ratings.height == 100_000
    assert ratings.get_column("rating").mean() == pytest.approx(3.52986)


@pytest.mark.realdata
def test_walmart_known_facts(walmart_raw: tuple[LoadSummary, Path]) -> None:
    summary, raw_dir = walmart_raw
    _assert_all_contract_shaped(summary)
    sales = _read(raw_dir, "sales", "walmart")
    assert summary.source_rows == sales.height == 421_570
    assert summary.rows_written["markets"] == 45
    assert summary.rows_written["products"] == 81
    assert sales.select(pl.struct("product_id", "market_id").n_unique()).item() == 3_331
    assert sales.get_column("date").n_unique() == 143
    # first row `1,1,2010-02-05,24924.5`: the week ending Friday 5 Feb starts on Saturday 30 Jan
    assert sales.row(0) == (date(2010, 1, 30), "D01", "WM01", "weekly", 24924.5, "USD")
    assert (sales.get_column("date").dt.weekday() == 6).all()  # every week starts on a Saturday
    assert (sales.get_column("quantity") < 0).sum() == 1_285  # returns: left to ingest's rule
    _assert_references_hold(raw_dir, "walmart", "sales")
    markets = _read(raw_dir, "markets", "walmart")
    assert markets.row(0) == (
        "WM01",
        "Walmart store 1 (type A, 151,315 sq ft)",
        "US",
        "USD",
        "America/Chicago",
        "en-US",
    )


@pytest.mark.realdata
def test_ipinyou_known_facts(ipinyou_raw: tuple[LoadSummary, Path]) -> None:
    summary, raw_dir = ipinyou_raw
    _assert_all_contract_shaped(summary)
    auctions = _read(raw_dir, "auctions", "ipinyou")
    assert summary.source_rows == summary.rows_written["auctions"] == auctions.height == 12_526
    # the competition's split rides along in a side table, line for line
    split = _read(raw_dir, "ipinyou_split", "ipinyou")
    assert split.get_column("auction_id").equals(auctions.get_column("auction_id"))
    train = auctions.filter(split.get_column("split") == "train")
    test = auctions.filter(split.get_column("split") == "test")
    assert (train.height, test.height) == (8_355, 4_171)
    # README: mean payprice 93.3 (train) and 103.3 (test) fen CPM, i.e. ~0.93 / ~1.03 CNY CPM
    assert train.get_column("market_price").mean() == pytest.approx(0.933, abs=0.001)
    assert test.get_column("market_price").mean() == pytest.approx(1.033, abs=0.001)
    assert train.get_column("click").sum() == 5
    assert train.get_column("won").all()
    assert (train.get_column("market_price") <= train.get_column("bid_price")).all()
    # first train line: 20131022135101295 Beijing time
    assert train.get_column("request_ts")[0] == datetime(2013, 10, 22, 5, 51, 1, 295_000, tzinfo=UTC)

    campaigns = _read(raw_dir, "campaigns", "ipinyou")
    assert campaigns.height == 1
    campaign = campaigns.row(0, named=True)
    assert campaign["campaign_id"] == "ipinyou-2259"
    assert (campaign["start_date"], campaign["end_date"]) == (date(2013, 10, 19), date(2013, 10, 25))
    # a day's spend: a few thousand impressions at ~1 CNY per thousand
    assert 1.0 < campaign["daily_budget"] < 5.0
    _assert_references_hold(raw_dir, "ipinyou", "auctions")


# ---------------------------------------------------------------------------------------------
# detection


@pytest.mark.realdata
@pytest.mark.parametrize("name", list(DATASETS))
def test_detect_dataset_recognises_each_source(name: str) -> None:
    folder = _source_or_skip(name)
    assert detect_dataset(folder) == name
    data_files = [path for path in folder.iterdir() if path.is_file() and not path.name.startswith("README")]
    assert data_files
    if name == "online-retail":
        data_files = [folder / ONLINE_RETAIL_FILE]
    for path in data_files:
        assert detect_dataset(path) == name, path


def test_detect_dataset_returns_none_for_unrelated_files(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("hello\tworld\n")
    csv = tmp_path / "table.csv"
    csv.write_text("a,b\n1,2\n")
    parquet = tmp_path / "table.parquet"
    pl.DataFrame({"a": [1]}).write_parquet(parquet)
    not_parquet = tmp_path / "broken.parquet"
    not_parquet.write_text("not parquet")
    for path in (text, csv, parquet, not_parquet, tmp_path, tmp_path / "missing"):
        assert detect_dataset(path) is None, path


def test_default_sources_sit_beside_the_project() -> None:
    assert {default_source(name).name for name in DATASETS} == {
        "online-retail",
        "movielens-100k",
        "walmart-weekly",
        "ipinyou-2259",
    }
    with pytest.raises(KeyError):
        default_source("nope")


# ---------------------------------------------------------------------------------------------
# reference tables and the raw-table writer


def test_country_reference_is_usable() -> None:
    supported = holidays.list_supported_countries()
    for country in COUNTRIES.values():
        zoneinfo.ZoneInfo(country.timezone)  # raises if the zone does not exist
        assert country.code in supported, country.code
        assert country.currency == "USD" or country.currency in USD_PER_UNIT[2011], country.currency
    assert set(online_retail.COUNTRY_CODES.values()) <= COUNTRIES.keys()
    markets = markets_frame(["US", "GB"])
    assert markets.get_column("market_id").to_list() == ["GB", "US"]
    with pytest.raises(KeyError):
        markets_frame(["XX"])


def test_daily_fx_rates_cover_every_day() -> None:
    fx = daily_fx_rates(["GBP", "USD"], date(2011, 1, 30), date(2011, 2, 2), 2011)
    assert fx.columns == TABLES["fx_rates"].column_names
    assert fx.height == 8
    rates = dict(zip(fx.get_column("currency"), fx.get_column("usd_per_unit"), strict=False))
    assert rates["USD"] == 1.0
    assert 1.5 < rates["GBP"] < 1.7
    with pytest.raises(KeyError, match="XYZ"):
        daily_fx_rates(["XYZ"], date(2011, 1, 1), date(2011, 1, 1), 2011)


def test_conform_to_contract_orders_casts_and_rejects() -> None:
    frame = pl.DataFrame(
        {
            LOADER_REJECT_COLUMN: [None],
            "usd_per_unit": [1],  # integer: cast to the contract's float
            "currency": ["USD"],
            "date": [date(2011, 1, 1)],
        }
    )
    conformed = conform_to_contract(frame, "fx_rates")
    assert conformed.columns == ["date", "currency", "usd_per_unit", LOADER_REJECT_COLUMN]
    assert conformed.schema["usd_per_unit"] == pl.Float64
    assert conformed.schema[LOADER_REJECT_COLUMN] == pl.String
    with pytest.raises(ValueError, match="without columns"):
        conform_to_contract(frame.drop("currency"), "fx_rates")
    with pytest.raises(pl.exceptions.InvalidOperationError):
        conform_to_contract(frame.with_columns(pl.lit("one").alias("usd_per_unit")), "fx_rates")
