"""UCI Online Retail (a UK gift-ware shop, 2010-12 to 2011-12) and Online Retail II (the same shop,
2009-12 to 2011-12) as raw contract tables.

Source: one file, parquet, CSV or Excel (Online Retail II's workbook has one sheet per year; the
sheets are stacked), with InvoiceNo, StockCode, Description, Quantity, InvoiceDate (UK local time),
UnitPrice (GBP), CustomerID (often missing) and Country; one row per invoice line. Online Retail II
names three of them Invoice, Price and Customer ID: either naming is read (`read_source`).
InvoiceDate may be text (`DATE_FORMATS`, e.g. 2010-12-01 08:26:00).

Mapping (ids carry the prefix `or-` so they cannot collide with another data set's ids, because
readers see the union of all partitions):
- markets: the customers' countries, from `countries.COUNTRIES` through `COUNTRY_CODES` (EIRE -> IE,
  RSA -> ZA, USA -> US, Channel Islands -> JE). "European Community" and "Unspecified" are not
  countries: they stay unmapped, their rows keep the raw name as market_id, and ingest quarantines
  them as an unknown market_id.
- users: one per CustomerID (`or-17850`). Home market: the country of most of their lines (a mapped
  country wins over an unmapped one; ties go to the alphabetically first code). signup_ts: their
  first invoice, since the data has no sign-up time.
- products: one per StockCode, upper-cased (`84660b` and `84660B` are the same item). title: the
  most common Description on sale lines ("Unknown", this file's filler for a missing description,
  becomes null). category: the first matching keyword group of `CATEGORY_KEYWORDS` on the title
  (a rough heuristic, "unknown" when nothing matches; "non-product" for postage, fees and the like).
  brand "unknown". price: the median positive UnitPrice over sale lines, GBP (null if never sold at a
  positive price). created_ts: first line mentioning the product.
- events: one "purchase" per invoice line; event_id `or-<invoice>-<line number within invoice>`;
  quantity and UnitPrice as they are; currency GBP; channel "web"; event_ts from Europe/London
  local time to UTC (the file has no lines in the DST change hours).
- fx_rates: every day of the data for GBP and each market currency, at 2011 annual averages
  (`fx.py`).

Rows flagged in `_reject_reason` (one reason per row, the first that applies in this order):
- events `unreadable <column>`: a Quantity, InvoiceDate or UnitPrice that cannot be read (a file
  where no value of such a column can be read is refused with one line instead).
- events `CANCELLATION`: the invoice number starts with C (a credit note, negative quantity).
- events and products `non-product stock code <CODE>`: postage, carriage, fees, manual
  adjustments, discounts, samples, bad-debt adjustments (`NON_PRODUCT_CODES` says which code is
  what), and `non-product stock code GIFT_0001_*` for gift vouchers.
- events `STOCK_ADJUSTMENT`: a negative quantity on an ordinary invoice (damaged, lost or
  recounted stock, always at price 0 without a customer).
- events `MISSING_CUSTOMER`: no CustomerID, so the line cannot be tied to a user.
- events `DUPLICATE_LINE`: an exact copy of an earlier source line (every column equal). Ingest's
  own duplicate rule cannot see these, because each line gets its own event_id.
Left to ingest's generic rules: zero or negative prices, unknown markets.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from features.contract import LOADER_REJECT_COLUMN
from features.loaders.countries import COUNTRIES, markets_frame
from features.loaders.fx import daily_fx_rates
from features.loaders.online_retail_source import (  # noqa: F401 (re-exported: the module's reading side)
    DATE_FORMATS,
    RENAMED_IN_II,
    SOURCE_COLUMNS,
    SOURCE_COLUMNS_II,
    UNREADABLE,
    UNREADABLE_REASON,
    find_source,
    header_columns,
    read_source,
    source_columns,
)
from features.loaders.raw import LoadSummary, RawOutput

DATASET = "online-retail"
SOURCE_TIMEZONE = "Europe/London"
CURRENCY = "GBP"
FX_YEAR = 2011
ID_PREFIX = "or-"
MISSING_DESCRIPTION = "Unknown"

# Country names as the file spells them -> ISO 3166-1 alpha-2. Not listed on purpose:
# "European Community" and "Unspecified" (not countries).
COUNTRY_CODES: dict[str, str] = {
    "Australia": "AU",
    "Austria": "AT",
    "Bahrain": "BH",
    "Belgium": "BE",
    "Brazil": "BR",
    "Canada": "CA",
    "Channel Islands": "JE",
    "Cyprus": "CY",
    "Czech Republic": "CZ",
    "Denmark": "DK",
    "EIRE": "IE",
    "Finland": "FI",
    "France": "FR",
    "Germany": "DE",
    "Greece": "GR",
    "Hong Kong": "HK",
    "Iceland": "IS",
    "Israel": "IL",
    "Italy": "IT",
    "Japan": "JP",
    "Lebanon": "LB",
    "Lithuania": "LT",
    "Malta": "MT",
    "Netherlands": "NL",
    "Norway": "NO",
    "Poland": "PL",
    "Portugal": "PT",
    "RSA": "ZA",
    "Saudi Arabia": "SA",
    "Singapore": "SG",
    "Spain": "ES",
    "Sweden": "SE",
    "Switzerland": "CH",
    "USA": "US",
    "United Arab Emirates": "AE",
    "United Kingdom": "GB",
}

# Stock codes that are bookkeeping, not merchandise (upper-cased).
NON_PRODUCT_CODES: dict[str, str] = {
    "POST": "postage",
    "DOT": "dotcom postage",
    "C2": "carriage",
    "M": "manual adjustment",
    "D": "discount",
    "S": "samples",
    "B": "bad debt adjustment",
    "BANK CHARGES": "bank charges",
    "AMAZONFEE": "Amazon fee",
    "CRUK": "Cancer Research UK commission",
    "PADS": "placeholder line at 0.001",
}
GIFT_VOUCHER_PREFIX = "GIFT_0001_"
NON_PRODUCT_REASON = "non-product stock code"  # followed by the code
GIFT_VOUCHER_REASON = f"{NON_PRODUCT_REASON} {GIFT_VOUCHER_PREFIX}*"

CANCELLATION = "cancellation (invoice starting with C)"
STOCK_ADJUSTMENT = "stock adjustment (negative quantity outside a cancellation invoice)"
MISSING_CUSTOMER = "missing customer id"
DUPLICATE_LINE = "duplicate invoice line (identical to an earlier line)"
NON_PRODUCT_CATEGORY = "non-product"
UNKNOWN = "unknown"

# Keyword groups for a rough category, as space-separated title words; the first group that has a
# word of the title wins, so the more specific groups come first.
CATEGORY_KEYWORDS: dict[str, str] = {
    "christmas": "CHRISTMAS XMAS ADVENT SANTA REINDEER NATIVITY",
    "jewellery": "NECKLACE BRACELET EARRINGS RING CHARM BEADS BROOCH PENDANT",
    "candles and lighting": "CANDLE CANDLES T-LIGHT T-LIGHTS TEALIGHT TEALIGHTS LANTERN LAMP LAMPSHADE "
    "LIGHT LIGHTS NIGHTLIGHT CANDLEHOLDER CANDLESTICK",
    "bags": "BAG BAGS HANDBAG WASHBAG PURSE SHOPPER TOTE RUCKSACK BACKPACK",
    "kitchen and dining": "MUG MUGS CUP CUPS SAUCER BOWL BOWLS PLATE PLATES DISH TRAY CUTLERY BEAKER "
    "TEAPOT JUG JAR CAKESTAND CAKE BAKING NAPKINS APRON LUNCH TEA COFFEE COASTER COASTERS SPOON SPOONS "
    "TUMBLER PLACEMAT PLACEMATS TEACUP KITCHEN PANTRY",
    "stationery and gift wrap": "CARD CARDS WRAP STICKER STICKERS NOTEBOOK PEN PENS PENCIL PENCILS TAPE "
    "TAG TAGS ENVELOPE ENVELOPES PAPER CALENDAR JOURNAL NOTEPAD ERASER RIBBON RIBBONS STAMP BOOK",
    "toys and games": "TOY TOYS GAME GAMES DOLL DOLLY JIGSAW PUZZLE SKITTLES DOMINOES PLAYHOUSE CRAYONS "
    "BALLOON BALLOONS TEDDY",
    "garden and outdoor": "GARDEN PLANT PLANTER WATERING BIRDHOUSE PARASOL UMBRELLA PICNIC",
    "home decor": "FRAME MIRROR CLOCK SIGN CUSHION DOORSTOP DOORMAT HOOK HOOKS CABINET VASE ORNAMENT "
    "DECORATION DECORATIONS BUNTING GARLAND WREATH HEART MAGNET MAGNETS PLAQUE BASKET STORAGE BOX BOXES "
    "TIN TINS DRAWER HOLDER RACK THROW BLANKET QUILT CHALKBOARD SHELF BELL BELLS BAUBLE",
}


def _to_utc(local: pl.Expr, dtype: pl.Datetime) -> pl.Expr:
    if dtype.time_zone is not None:  # already aware: trust its zone
        return local.dt.convert_time_zone("UTC")
    # no invoice falls in the DST change hours; should one appear, it becomes null and ingest rejects it
    aware = local.dt.replace_time_zone(SOURCE_TIMEZONE, ambiguous="earliest", non_existent="null")
    return aware.dt.convert_time_zone("UTC")


def _customer_id(column: pl.Expr, dtype: pl.DataType) -> pl.Expr:
    """17850.0 (the file stores ids as floats) -> "or-17850"."""
    text = column.cast(pl.Int64).cast(pl.String) if dtype.is_numeric() else column.str.replace(r"\.0$", "")
    return pl.lit(ID_PREFIX) + text


def _non_product_reason(code: pl.Expr) -> pl.Expr:
    reasons = {code_: f"{NON_PRODUCT_REASON} {code_}" for code_ in NON_PRODUCT_CODES}
    return (
        pl.when(code.str.starts_with(GIFT_VOUCHER_PREFIX))
        .then(pl.lit(GIFT_VOUCHER_REASON))
        .otherwise(code.replace_strict(reasons, default=None, return_dtype=pl.String))
    )


def invoice_lines(raw: pl.DataFrame) -> pl.DataFrame:
    """Source lines with normalised ids, UTC time and their `_reject_reason`; same rows, same order."""
    stock_code = pl.col("StockCode").str.strip_chars().str.to_uppercase()
    is_cancellation = pl.col("InvoiceNo").str.starts_with("C")
    reason = (
        pl.when(pl.col(UNREADABLE).is_not_null())
        .then(pl.col(UNREADABLE))
        .when(is_cancellation)
        .then(pl.lit(CANCELLATION))
        .when(pl.col("non_product_reason").is_not_null())
        .then(pl.col("non_product_reason"))
        .when(pl.col("Quantity") < 0)
        .then(pl.lit(STOCK_ADJUSTMENT))
        .when(pl.col("CustomerID").is_null())
        .then(pl.lit(MISSING_CUSTOMER))
        .when(~pl.struct(SOURCE_COLUMNS).is_first_distinct())
        .then(pl.lit(DUPLICATE_LINE))
    )
    line_number = pl.int_range(1, pl.len() + 1).over("InvoiceNo")
    return (
        raw.with_row_index("source_row")
        .with_columns(
            product_id=pl.lit(ID_PREFIX) + stock_code,
            non_product_reason=_non_product_reason(stock_code),
            user_id=_customer_id(pl.col("CustomerID"), raw.schema["CustomerID"]),
            market_id=pl.col("Country").replace_strict(COUNTRY_CODES, default=pl.col("Country")),
            event_ts=_to_utc(pl.col("InvoiceDate"), raw.schema["InvoiceDate"]),
            is_sale=~is_cancellation & (pl.col("Quantity") > 0) & (pl.col("UnitPrice") > 0),
            event_id=pl.lit(ID_PREFIX) + pl.col("InvoiceNo") + "-" + line_number.cast(pl.String),
        )
        .with_columns(reason.alias(LOADER_REJECT_COLUMN))
    )


def build_events(lines: pl.DataFrame) -> pl.DataFrame:
    return lines.select(
        "event_id",
        "event_ts",
        "user_id",
        "product_id",
        "market_id",
        pl.lit("purchase").alias("event_type"),
        pl.col("Quantity").alias("quantity"),
        pl.col("UnitPrice").alias("price"),
        pl.lit(CURRENCY).alias("currency"),
        pl.lit("web").alias("channel"),
        LOADER_REJECT_COLUMN,
    )


def categorise(title: pl.Expr) -> pl.Expr:
    """The first keyword group with a word in the title, else "unknown"."""
    words = title.str.to_uppercase().str.extract_all(r"[A-Z]+(?:-[A-Z]+)*")
    category = pl.lit(UNKNOWN)
    for name, keywords in reversed(CATEGORY_KEYWORDS.items()):  # built inside out: the first group wins
        matches = words.list.eval(pl.element().is_in(keywords.split())).list.any().fill_null(False)
        category = pl.when(matches).then(pl.lit(name)).otherwise(category)
    return category


def build_products(lines: pl.DataFrame) -> pl.DataFrame:
    description = pl.col("Description").str.strip_chars()
    titles = (
        lines.group_by("product_id", description.alias("title"))
        .agg(sales=pl.col("is_sale").sum(), lines=pl.len(), first_row=pl.col("source_row").min())
        .with_columns(missing=pl.col("title").is_null() | pl.col("title").is_in(["", MISSING_DESCRIPTION]))
        .sort(
            ["product_id", "missing", "sales", "lines", "first_row"],
            descending=[False, False, True, True, False],
        )
        .group_by("product_id", maintain_order=True)
        .agg(pl.when(~pl.col("missing").first()).then(pl.col("title").first()).alias("title"))
    )
    products = lines.group_by("product_id").agg(
        price=pl.col("UnitPrice").filter(pl.col("is_sale")).median(),
        created_ts=pl.col("event_ts").min(),
        non_product_reason=pl.col("non_product_reason").first(),
    )
    return (
        products.join(titles, on="product_id", how="left")
        .select(
            "product_id",
            "title",
            pl.when(pl.col("non_product_reason").is_not_null())
            .then(pl.lit(NON_PRODUCT_CATEGORY))
            .otherwise(categorise(pl.col("title").fill_null("")))
            .alias("category"),
            pl.lit(UNKNOWN).alias("brand"),
            "price",
            pl.when(pl.col("price").is_not_null()).then(pl.lit(CURRENCY)).alias("currency"),
            "created_ts",
            pl.col("non_product_reason").alias(LOADER_REJECT_COLUMN),
        )
        .sort("product_id")
    )


def build_users(lines: pl.DataFrame) -> pl.DataFrame:
    per_market = (
        lines.filter(pl.col("user_id").is_not_null())
        .group_by("user_id", "market_id")
        .agg(lines=pl.len(), first_ts=pl.col("event_ts").min())
        .with_columns(mapped=pl.col("market_id").is_in(list(COUNTRIES)))
    )
    return (
        per_market.sort(["user_id", "mapped", "lines", "market_id"], descending=[False, True, True, False])
        .group_by("user_id", maintain_order=True)
        .agg(pl.col("market_id").first(), pl.col("first_ts").min().alias("signup_ts"))
        .sort("user_id")
    )


def load(source: Path, raw_dir: Path) -> LoadSummary:
    """Read Online Retail or Online Retail II (a file, or the folder holding it) and write its raw
    tables under raw_dir."""
    raw = read_source(find_source(source))
    lines = invoice_lines(raw)
    market_codes = sorted(set(lines.get_column("market_id").unique()) & COUNTRIES.keys())
    markets = markets_frame(market_codes)
    days = lines.get_column("event_ts").dt.date()

    output = RawOutput(DATASET, raw_dir)
    output.write(
        "fx_rates",
        daily_fx_rates({CURRENCY, *markets.get_column("currency")}, days.min(), days.max(), FX_YEAR),
    )
    output.write("markets", markets)
    output.write("users", build_users(lines))
    output.write("products", build_products(lines))
    output.write("events", build_events(lines))
    return output.summary(source_rows=raw.height)
