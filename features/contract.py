"""The data contract: the tables every Tradewind pipeline reads, with their columns and row rules.

Every file that enters the platform (simulator output, real-data loaders, nightly partitions) is
checked against these schemas by `features.ingest`. A file with a missing or mistyped column is
refused; a row that breaks a rule goes to quarantine with its reason. The rules are declared here
so that the documentation (`tradewind contract`) and the checks can never disagree.

Money is always in the currency named on the row; `fx_rates` converts it to USD. Timestamps are UTC.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

UTC_TIMESTAMP = pl.Datetime("us", "UTC")


@dataclass(frozen=True)
class Column:
    name: str
    dtype: pl.DataType
    description: str
    nullable: bool = False
    # row rules
    positive: bool = False  # value > 0
    non_negative: bool = False  # value >= 0
    allowed: tuple[str, ...] | None = None  # one of these values
    references: str | None = None  # "table.column" that must hold the value
    is_currency: bool = False  # must be a currency known to fx_rates
    not_future: bool = False  # an observed time: a value after the ingest time is an error


@dataclass(frozen=True)
class RowRule:
    """A check across columns; `failing` is a polars expression that is true for a bad row."""

    reason: str
    failing: pl.Expr


@dataclass(frozen=True)
class TableSchema:
    name: str
    description: str
    columns: tuple[Column, ...]
    key: tuple[str, ...]
    # the column Feast and point-in-time joins treat as the event time, if any
    timestamp: str | None = None
    rules: tuple[RowRule, ...] = ()

    @property
    def column_names(self) -> list[str]:
        return [column.name for column in self.columns]

    @property
    def polars_schema(self) -> dict[str, pl.DataType]:
        return {column.name: column.dtype for column in self.columns}

    def column(self, name: str) -> Column:
        for column in self.columns:
            if column.name == name:
                return column
        raise KeyError(f"table {self.name} has no column {name}")


EVENT_TYPES = ("view", "add_to_cart", "purchase")
CHANNELS = ("web", "app", "marketplace_feed", "email", "ads")
OBJECTIVES = ("clicks", "value")

MARKETS = TableSchema(
    name="markets",
    description="A country the marketplace sells into, with its own currency, time zone and language.",
    key=("market_id",),
    columns=(
        Column("market_id", pl.String, "Market code, usually the ISO 3166 country code (US, DE, JP)"),
        Column("name", pl.String, "Display name"),
        Column("country", pl.String, "ISO 3166-1 alpha-2 country code; selects the holiday calendar"),
        Column("currency", pl.String, "ISO 4217 code of the local currency", is_currency=True),
        Column("timezone", pl.String, "IANA time zone, e.g. Asia/Tokyo"),
        Column("language", pl.String, "BCP 47 language tag, e.g. ja-JP"),
    ),
)

FX_RATES = TableSchema(
    name="fx_rates",
    description="Daily exchange rate of each currency to USD.",
    key=("date", "currency"),
    timestamp="date",
    columns=(
        Column("date", pl.Date, "Day the rate applies to", not_future=True),
        Column("currency", pl.String, "ISO 4217 code"),
        Column("usd_per_unit", pl.Float64, "US dollars for one unit of the currency", positive=True),
    ),
)

USERS = TableSchema(
    name="users",
    description="A shopper, registered in one home market.",
    key=("user_id",),
    timestamp="signup_ts",
    columns=(
        Column("user_id", pl.String, "Stable user id"),
        Column("market_id", pl.String, "Home market", references="markets.market_id"),
        Column("signup_ts", UTC_TIMESTAMP, "When the account was created (UTC)", not_future=True),
    ),
)

PRODUCTS = TableSchema(
    name="products",
    description="A catalogue item with its base list price.",
    key=("product_id",),
    timestamp="created_ts",
    columns=(
        Column("product_id", pl.String, "Stable product id (SKU)"),
        Column("title", pl.String, "Product name", nullable=True),
        Column("category", pl.String, "Top-level category"),
        Column("brand", pl.String, "Brand name"),
        Column(
            "price",
            pl.Float64,
            "Base list price (empty where a data set has none)",
            nullable=True,
            positive=True,
        ),
        Column("currency", pl.String, "Currency of the base price", nullable=True, is_currency=True),
        Column("created_ts", UTC_TIMESTAMP, "When the product was listed (UTC)", not_future=True),
    ),
)

LISTINGS = TableSchema(
    name="listings",
    description="Where a product is sold, at which local list price. A product is offered in a "
    "market only if it has a listing there.",
    key=("product_id", "market_id"),
    columns=(
        Column("product_id", pl.String, "Product", references="products.product_id"),
        Column("market_id", pl.String, "Market it is sold in", references="markets.market_id"),
        Column("price", pl.Float64, "Local list price", positive=True),
        Column("currency", pl.String, "Local currency", is_currency=True),
    ),
)

PROMOTIONS = TableSchema(
    name="promotions",
    description="A planned price cut for a product in a market, known in advance.",
    key=("product_id", "market_id", "start_date"),
    timestamp="start_date",
    rules=(
        RowRule("discount of 100% or more", pl.col("discount") >= 1),
        RowRule("end_date before start_date", pl.col("end_date") < pl.col("start_date")),
    ),
    columns=(
        Column("product_id", pl.String, "Product", references="products.product_id"),
        Column("market_id", pl.String, "Market", references="markets.market_id"),
        Column("start_date", pl.Date, "First day (market local date)"),
        Column("end_date", pl.Date, "Last day, inclusive (market local date)"),
        Column("discount", pl.Float64, "Fraction off the list price, 0 < discount < 1", positive=True),
    ),
)

EVENTS = TableSchema(
    name="events",
    description="A shopper's interaction with a product: view, add to cart or purchase.",
    key=("event_id",),
    timestamp="event_ts",
    columns=(
        Column("event_id", pl.String, "Unique event id"),
        Column("event_ts", UTC_TIMESTAMP, "When it happened (UTC)", not_future=True),
        Column("user_id", pl.String, "Who", references="users.user_id"),
        Column("product_id", pl.String, "Which product", references="products.product_id"),
        Column("market_id", pl.String, "Storefront market", references="markets.market_id"),
        Column("event_type", pl.String, "view, add_to_cart or purchase", allowed=EVENT_TYPES),
        Column("quantity", pl.Int64, "Units", positive=True),
        Column(
            "price",
            pl.Float64,
            "Unit price shown or paid, after promotion (empty where a data set has none, e.g. MovieLens)",
            nullable=True,
            positive=True,
        ),
        Column("currency", pl.String, "Currency of price", nullable=True, is_currency=True),
        Column("channel", pl.String, "Where the shopper came from", allowed=CHANNELS),
    ),
)

CAMPAIGNS = TableSchema(
    name="campaigns",
    description="An advertiser's campaign buying ad traffic in one market under a daily budget.",
    key=("campaign_id",),
    timestamp="start_date",
    rules=(RowRule("end_date before start_date", pl.col("end_date") < pl.col("start_date")),),
    columns=(
        Column("campaign_id", pl.String, "Campaign id"),
        Column("advertiser_id", pl.String, "Advertiser (a seller on the marketplace)"),
        Column("market_id", pl.String, "Target market", references="markets.market_id"),
        Column("product_id", pl.String, "Promoted product", nullable=True, references="products.product_id"),
        Column("objective", pl.String, "What the bidder maximises: clicks or value", allowed=OBJECTIVES),
        Column("daily_budget", pl.Float64, "Budget per market-local day", positive=True),
        Column("currency", pl.String, "Currency of budget and prices", is_currency=True),
        Column("start_date", pl.Date, "First day"),
        Column("end_date", pl.Date, "Last day, inclusive", nullable=True),
    ),
)

AUCTIONS = TableSchema(
    name="auctions",
    description="One ad auction (bid request) seen by a campaign, with the price to beat and "
    "what happened. Prices are CPM-style per impression in the row's currency.",
    key=("auction_id",),
    timestamp="request_ts",
    rules=(
        RowRule("click without a won impression", pl.col("click") & ~pl.col("won")),
        RowRule("conversion without a click", pl.col("conversion") & ~pl.col("click")),
    ),
    columns=(
        Column("auction_id", pl.String, "Bid request id"),
        Column("request_ts", UTC_TIMESTAMP, "When the request arrived (UTC)", not_future=True),
        Column("campaign_id", pl.String, "Campaign that saw it", references="campaigns.campaign_id"),
        Column("market_id", pl.String, "Market of the request", references="markets.market_id"),
        Column("exchange", pl.String, "Ad exchange"),
        Column("slot_id", pl.String, "Ad slot"),
        Column("slot_width", pl.Int64, "Slot width in pixels", positive=True),
        Column("slot_height", pl.Int64, "Slot height in pixels", positive=True),
        Column("region", pl.String, "Region of the viewer"),
        Column(
            "user_id", pl.String, "Marketplace user, when known", nullable=True, references="users.user_id"
        ),
        Column("floor_price", pl.Float64, "Reserve price", non_negative=True),
        Column("market_price", pl.Float64, "Highest competing bid: the price to beat", non_negative=True),
        Column("bid_price", pl.Float64, "Our bid", non_negative=True),
        Column("won", pl.Boolean, "Whether our bid won"),
        Column("click", pl.Boolean, "Whether the won impression was clicked"),
        Column("conversion", pl.Boolean, "Whether the click led to a purchase"),
        Column("value", pl.Float64, "Value of the conversion (0 if none)", non_negative=True),
        Column("currency", pl.String, "Currency of all prices on the row", is_currency=True),
    ),
)

SALES = TableSchema(
    name="sales",
    description="Sales already aggregated per series and period, for sources that have no "
    "individual orders (Walmart's weekly store x department sales). Event-level sources derive "
    "their demand from purchase events instead.",
    key=("date", "product_id", "market_id"),
    timestamp="date",
    columns=(
        Column("date", pl.Date, "First day of the period (market local date)", not_future=True),
        Column("product_id", pl.String, "Product or department", references="products.product_id"),
        Column("market_id", pl.String, "Market or store", references="markets.market_id"),
        Column("frequency", pl.String, "daily or weekly", allowed=("daily", "weekly")),
        Column("quantity", pl.Float64, "Units (or sales amount where units are unknown)", non_negative=True),
        Column(
            "currency",
            pl.String,
            "Currency of amounts, when quantity is money",
            nullable=True,
            is_currency=True,
        ),
    ),
)

# Order matters: a table is validated after the tables it references (currencies come from fx_rates).
TABLES: dict[str, TableSchema] = {
    table.name: table
    for table in (
        FX_RATES,
        MARKETS,
        USERS,
        PRODUCTS,
        LISTINGS,
        PROMOTIONS,
        EVENTS,
        SALES,
        CAMPAIGNS,
        AUCTIONS,
    )
}

# A loader may set this column on a raw row to quarantine it for a data-set-specific reason
# (an Online Retail cancellation, say). It never reaches a contract table.
LOADER_REJECT_COLUMN = "_reject_reason"


def _rules_text(column: Column) -> str:
    rules = []
    if not column.nullable:
        rules.append("required")
    if column.positive:
        rules.append("> 0")
    if column.non_negative:
        rules.append(">= 0")
    if column.allowed:
        rules.append("one of " + ", ".join(column.allowed))
    if column.references:
        rules.append(f"must exist in {column.references}")
    if column.is_currency:
        rules.append("currency known to fx_rates")
    if column.not_future:
        rules.append("not after ingest time")
    return "; ".join(rules)


def contract_markdown() -> str:
    """The contract as Markdown: `features/CONTRACT.md` is this text (a test keeps them equal)."""
    lines = [
        "# The Tradewind data contract",
        "",
        "Generated from `features/contract.py` by `tradewind contract --markdown`; do not edit by hand.",
        "Timestamps are UTC. Money is in the currency named on the row; `fx_rates` converts it to USD.",
        "`tradewind ingest` refuses a file with a missing or mistyped column (one line naming file and",
        "column, nothing written) and sends rows that break a rule to `quarantine/<table>/` with a",
        "`reason`. Every table also refuses exact duplicate rows and duplicate keys.",
        "",
    ]
    for table in TABLES.values():
        lines += [f"## {table.name}", "", table.description, "", f"Key: {', '.join(table.key)}."]
        if table.rules:
            lines.append("Row rules: " + "; ".join(rule.reason + " is refused" for rule in table.rules) + ".")
        lines += ["", "| column | type | rules | meaning |", "|---|---|---|---|"]
        for column in table.columns:
            lines.append(f"| {column.name} | {column.dtype} | {_rules_text(column)} | {column.description} |")
        lines.append("")
    return "\n".join(lines)
