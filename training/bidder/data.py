"""The bidder's training set: auctions on their market-local days in one currency, Feast context,
per-campaign train / test / click-model splits, and the campaign-days the bidders replay.

Every request is placed on its campaign market's local day (hour, weekday, date) and its prices are
converted to one currency (`data.currency`, USD by default) with that day's rate. The Feast feature
service `bidding` adds context known before the day starts (the campaign's last 7 days' CTR, CVR,
win rate and mean price, the market's active users), joined point in time at the local midnight of
each campaign-day. Per campaign, the latest `test_days` days are held out; the `train_days` before
them are what the bidders are tuned and trained on; the click model learns from the won
impressions of the `click_model_days` before the held-out days.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np
import polars as pl

from configs.families import BIDDER
from configs.settings import Settings
from models.bidding.days import AuctionDay, days_from_frame
from models.bidding.served import KNOWN_USER
from training.bidder.config import BidderConfig
from training.pipeline import TrainingSet

logger = logging.getLogger(__name__)

# the feature service's columns the click model reads (Feast `<view>__<feature>` names)
CONTEXT_FEATURES: tuple[str, ...] = (
    "campaign_stats__ctr_7d",
    "campaign_stats__cvr_7d",
    "campaign_stats__win_rate_7d",
    "campaign_stats__avg_market_price_usd_7d",
    "market_daily__active_users_1d",
)
CONTRACT_TABLES = ("auctions", "campaigns", "markets", "fx_rates")


@dataclass(frozen=True)
class CampaignInfo:
    campaign_id: str
    market_id: str
    timezone: str
    currency: str
    to_target: float  # one unit of the campaign's currency in the target currency, latest rate
    daily_budget: float  # in the campaign's currency


@dataclass(frozen=True, eq=False)
class BiddingData:
    """Requests of every kept campaign: `role` is train or test for the bidders' days (null for rows
    only the click model reads); `click_train` marks the click model's rows; prices are CPM in the
    target currency; `credit` is the true click probability where the simulator's truth is known."""

    requests: pl.DataFrame
    campaigns: Mapping[str, CampaignInfo]
    context_features: tuple[str, ...]
    currency: str
    credit_source: Literal["truth", "pctr"]


def training_set(settings: Settings, config: BidderConfig) -> TrainingSet:
    """The contract tables of the data folder as `BiddingData`, with their digests as lineage."""
    from features.tables import read_required_tables, snapshot

    contract = settings.contract_dir
    tables = read_required_tables(contract, CONTRACT_TABLES)
    requests, campaigns = _requests(tables, config)
    context = _context_features(settings, requests, campaigns)
    requests = requests.join(context, on=["campaign_id", "local_date"], how="left")
    credit_source: Literal["truth", "pctr"] = "pctr"
    truth_file = settings.truth_dir / "auctions.parquet"
    if config.data.credit_true_clicks and truth_file.exists():
        truth = pl.read_parquet(truth_file, columns=["auction_id", "p_click"]).rename({"p_click": "credit"})
        requests = requests.join(truth, on="auction_id", how="left")
        credit_source = "truth"
    else:
        requests = requests.with_columns(credit=pl.lit(None, dtype=pl.Float64))
    data = BiddingData(requests, campaigns, CONTEXT_FEATURES, config.data.currency, credit_source)
    tables_snapshot = snapshot(contract)["tables"]
    lineage = {
        table: tables_snapshot[table]["digest"] for table in CONTRACT_TABLES if table in tables_snapshot
    }
    days = requests.filter(pl.col("role").is_not_null()).select("campaign_id", "local_date", "role").unique()
    summary = {
        "campaigns": len(campaigns),
        "requests": requests.height,
        "train_days": int((days["role"] == "train").sum()),
        "test_days": int((days["role"] == "test").sum()),
        "click_model_impressions": int(requests["click_train"].sum()),
        "click_model_clicks": int(requests.filter("click_train")["click"].sum()),
    }
    return TrainingSet(data=data, lineage=lineage, summary=summary)


def _requests(
    tables: Mapping[str, pl.DataFrame], config: BidderConfig
) -> tuple[pl.DataFrame, dict[str, CampaignInfo]]:
    """Auctions on their market-local days, prices in the target currency, split per campaign."""
    settings = config.data
    markets = tables["markets"]
    timezones = dict(markets.select("market_id", "timezone").iter_rows())
    fx = tables["fx_rates"].sort("date")
    known = set(fx["currency"].unique())
    if settings.currency not in known:
        raise ValueError(
            f"data.currency: no fx_rates for {settings.currency!r} (known: {', '.join(sorted(known))})"
        )
    auctions = tables["auctions"].join(
        tables["campaigns"].select("campaign_id", pl.col("currency").alias("campaign_currency")),
        on="campaign_id",
        how="inner",
    )
    local = []
    for market_id, zone in timezones.items():
        rows = auctions.filter(pl.col("market_id") == market_id)
        if rows.is_empty():
            continue
        local_ts = pl.col("request_ts").dt.convert_time_zone(zone)
        local.append(
            rows.with_columns(
                local_ts.dt.date().alias("local_date"),
                local_ts.dt.hour().cast(pl.Int64).alias("hour"),
                local_ts.dt.weekday().cast(pl.Int64).alias("weekday"),
                local_ts.dt.date()
                .cast(pl.Datetime("us"))
                .dt.replace_time_zone(zone, ambiguous="earliest", non_existent="null")
                .dt.convert_time_zone("UTC")
                .alias("day_start"),
            )
        )
    frame = pl.concat(local).sort("request_ts")
    # a day's rate, or the latest before it when the day has none
    rates = fx.select("date", "currency", "usd_per_unit")
    target = rates.filter(pl.col("currency") == settings.currency).select("date", target_usd="usd_per_unit")
    frame = (
        frame.sort("local_date")
        .join_asof(
            rates.rename({"date": "local_date", "currency": "currency_fx"}),
            on="local_date",
            by_left="currency",
            by_right="currency_fx",
            strategy="backward",
            check_sortedness=False,  # sorted by local_date above, hence within every currency too
        )
        .join_asof(target.rename({"date": "local_date"}), on="local_date", strategy="backward")
    )
    missing = frame.filter(pl.col("usd_per_unit").is_null() | pl.col("target_usd").is_null())
    if missing.height:
        first = missing.row(0, named=True)
        raise ValueError(
            f"fx_rates: no rate for {first['currency']} or {settings.currency} on or before "
            f"{first['local_date']} ({missing.height} auctions)"
        )
    to_target = pl.col("usd_per_unit") / pl.col("target_usd")
    frame = frame.with_columns(
        (pl.col("market_price") * to_target).alias("market_price"),
        (pl.col("floor_price") * to_target).alias("floor_price"),
        pl.col("user_id").is_not_null().cast(pl.Float64).alias(KNOWN_USER),
    ).sort("request_ts")

    # campaign-days: the latest test_days held out, the train_days before them for the bidders
    day_counts = frame.group_by("campaign_id", "local_date").agg(pl.len().alias("n"))
    full_days = day_counts.filter(pl.col("n") >= settings.min_requests_per_day).sort(
        "campaign_id", "local_date"
    )
    ranked = full_days.with_columns(
        pl.col("local_date").rank("ordinal", descending=True).over("campaign_id").alias("age")
    )
    roles = ranked.with_columns(
        pl.when(pl.col("age") <= settings.test_days)
        .then(pl.lit("test"))
        .when(pl.col("age") <= settings.test_days + settings.train_days)
        .then(pl.lit("train"))
        .otherwise(None)
        .alias("role")
    )
    per_campaign = roles.group_by("campaign_id").agg(
        (pl.col("role") == "train").sum().alias("train_days"),
        (pl.col("role") == "test").sum().alias("test_days"),
        pl.col("local_date").filter(pl.col("role") == "test").min().alias("test_start"),
    )
    kept = per_campaign.filter((pl.col("train_days") >= settings.min_train_days) & (pl.col("test_days") >= 1))
    if kept.is_empty():
        raise ValueError(
            f"auctions: no campaign has {settings.min_train_days} training days and a test day with at "
            f"least {settings.min_requests_per_day} requests each (see data.* in configs/bidder.yaml)"
        )
    frame = (
        frame.join(kept.select("campaign_id", "test_start"), on="campaign_id", how="inner")
        .join(roles.select("campaign_id", "local_date", "role"), on=["campaign_id", "local_date"], how="left")
        .with_columns(
            (
                pl.col("won")
                & (pl.col("local_date") < pl.col("test_start"))
                & (pl.col("local_date") >= pl.col("test_start") - pl.duration(days=settings.click_model_days))
            ).alias("click_train")
        )
        .filter(pl.col("role").is_not_null() | pl.col("click_train"))
        .sort("request_ts")
    )
    latest = (
        frame.sort("local_date")
        .group_by("campaign_id")
        .agg((pl.col("usd_per_unit") / pl.col("target_usd")).last().alias("to_target"))
    )
    campaigns_frame = (
        tables["campaigns"]
        .join(kept.select("campaign_id"), on="campaign_id")
        .join(latest, on="campaign_id")
        .sort("campaign_id")
    )
    campaigns = {
        row["campaign_id"]: CampaignInfo(
            campaign_id=row["campaign_id"],
            market_id=row["market_id"],
            timezone=timezones[row["market_id"]],
            currency=row["currency"],
            to_target=float(row["to_target"]),
            daily_budget=float(row["daily_budget"]),
        )
        for row in campaigns_frame.iter_rows(named=True)
    }
    return frame, campaigns


def _context_features(
    settings: Settings, requests: pl.DataFrame, campaigns: Mapping[str, CampaignInfo]
) -> pl.DataFrame:
    """The `bidding` feature service per campaign-day, as of the day's local midnight (Feast)."""
    entities = (
        requests.select(
            "campaign_id", "market_id", "local_date", pl.col("day_start").alias("event_timestamp")
        )
        .unique(["campaign_id", "local_date"])
        .sort("campaign_id", "local_date")
    )
    empty = entities.select("campaign_id", "local_date").with_columns(
        pl.lit(None, dtype=pl.Float64).alias(name) for name in CONTEXT_FEATURES
    )
    if not settings.feast_dir.exists():
        logger.warning(
            "no Feast repo in %s: the click model runs without context features", settings.feast_dir
        )
        return empty
    from features.store import historical_features

    joined = historical_features(settings, entities, BIDDER.feature_service)
    return joined.select(
        "campaign_id", "local_date", *(pl.col(name).cast(pl.Float64) for name in CONTEXT_FEATURES)
    )


# ---------------------------------------------------------------------------------------------
# the campaign-days the bidders replay


@dataclass(frozen=True, eq=False)
class CampaignDays:
    train: list[AuctionDay]
    test: list[AuctionDay]


def campaign_days(
    data: BiddingData, pctr: np.ndarray, test_credit: np.ndarray | None = None
) -> dict[str, CampaignDays]:
    """Each campaign's train and test days with the bidder's pCTR (one per request row with a role).

    Train days credit the pCTR (what a bidder could know); test days credit the truth when known,
    else the pCTR, or `test_credit` (one per row with a role) when given."""
    rows = data.requests.filter(pl.col("role").is_not_null()).with_columns(pctr=pl.Series(pctr))
    test_value = pl.col("credit").fill_null(pl.col("pctr"))
    if test_credit is not None:
        rows = rows.with_columns(test_credit=pl.Series(test_credit, dtype=pl.Float64))
        test_value = pl.col("test_credit")
    rows = rows.with_columns(
        pl.when(pl.col("role") == "test").then(test_value).otherwise(pl.col("pctr")).alias("credit")
    )
    days: dict[str, CampaignDays] = {}
    for campaign_id, info in data.campaigns.items():
        mine = rows.filter(pl.col("campaign_id") == campaign_id)
        split = {
            role: days_from_frame(
                mine.filter(pl.col("role") == role),
                info.timezone,
                click_prob_column="credit",
                cpm_prices=True,
            )
            for role in ("train", "test")
        }
        days[campaign_id] = CampaignDays(split["train"], split["test"])
    return days


def bidder_rows(data: BiddingData) -> pl.DataFrame:
    """The requests of the bidders' days (role train or test), in the order `campaign_days` reads."""
    return data.requests.filter(pl.col("role").is_not_null())
