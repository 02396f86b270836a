"""The recommender's live check for monitoring: what the serving champion recommends now against a
reference window (category mix drift), and its hit rate on purchases since it was trained."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import numpy as np
import polars as pl

from configs.settings import Settings
from models.recommendation.cold_start import SECONDS_PER_DAY
from training.monitoring.config import MonitoringConfig
from training.monitoring.drift import WindowSpan, sample_rows, scored_row
from training.monitoring.live import Champion, ChampionCheck, LiveAccuracy


def recommended_categories(model: Any, users: pl.DataFrame, k: int) -> list[str]:
    """The category of every item `model` answers each of `users` (in their last market) with."""
    categories = []
    for user, market in users.select("user_id", "market_id").iter_rows():
        if market not in model.market_index:
            continue
        answer = model.answer({"user_id": user, "market": market, "k": k, "exclude": [], "explain": False})
        for item in answer["items"]:
            categories.append(model.categories[model.item_category[model.item_index[item["product_id"]]]])
    return categories


def live_check(settings: Settings, champion: Champion, config: MonitoringConfig) -> ChampionCheck:
    """Drift of the recommended categories (reference vs current window) and the champion's hit rate
    on purchases made since it was trained, new to each buyer, beside its training hit rate."""
    from features.tables import scan_table

    model = champion.model
    family_config = champion.family_config
    k = family_config.evaluation.k
    events = (
        scan_table(settings.contract_dir, "events")
        .select("user_id", "product_id", "market_id", "event_type", "event_ts")
        .filter(pl.col("user_id").is_not_null())
        .collect()
    )
    span = WindowSpan.ending(events["event_ts"].max(), config)
    stamp = pl.col("event_ts")
    limit, seed = config.live.max_users, config.live.seed

    def active(condition: pl.Expr) -> pl.DataFrame:
        users = events.filter(condition).sort("event_ts").group_by("user_id").agg(pl.col("market_id").last())
        return sample_rows(users.sort("user_id"), limit, seed)

    reference = active((stamp > span.reference_start) & (stamp <= span.current_start))
    current = active(stamp > span.current_start)
    row = scored_row(
        f"prediction.category_mix_at_{k}",
        "prediction",
        pl.Series(recommended_categories(model, reference, k), dtype=pl.String),
        pl.Series(recommended_categories(model, current, k), dtype=pl.String),
        config,
        config.thresholds.prediction_psi,
    )

    cutoff = datetime.fromisoformat(model.trained_until)
    cutoff = cutoff if cutoff.tzinfo else cutoff.replace(tzinfo=UTC)
    purchases = events.filter((pl.col("event_type") == "purchase") & (stamp > cutoff))
    bought = model.bought
    user_index, item_index = model.user_index, model.item_index

    def new_to_user(user: str, item: str) -> bool:
        row_index, column = user_index.get(user), item_index.get(item)
        return row_index is None or column is None or not bought[row_index, column]

    if purchases.height:
        purchases = purchases.filter(
            pl.Series([new_to_user(u, i) for u, i in purchases.select("user_id", "product_id").iter_rows()])
        )
    training_metric = f"tradewind.hitrate_at_{k}"
    newest = events["event_ts"].max()
    live_days = (newest - cutoff).total_seconds() / SECONDS_PER_DAY
    holdout_days = family_config.data.holdout_days
    comparable = live_days >= holdout_days
    base = {
        "metric": f"hitrate_at_{k}",
        "higher_is_better": True,
        "training_metric": training_metric,
        "training_value": champion.metrics.get(training_metric),
        "since": f"purchases after {cutoff:%Y-%m-%d %H:%M} UTC (the champion's trained_until), "
        f"{live_days:.1f} days",
        "comparable": comparable,
        "note": ""
        if comparable
        else f"the live window ({live_days:.1f} days) is shorter than the {holdout_days}-day holdout: "
        "fewer purchases per user to hit, so the hit rate reads low; not a trigger yet",
    }
    if purchases.height == 0:
        return ChampionCheck(
            [row],
            LiveAccuracy(value=None, observations=0, **{**base, "note": "no purchase since the champion"}),
            span,
        )
    buyers = (
        purchases.sort("event_ts")
        .group_by("user_id")
        .agg(
            pl.col("product_id").unique(),
            pl.col("market_id").first(),
            pl.col("event_ts").first().dt.date().alias("day"),
        )
        .sort("user_id")
    )
    buyers = sample_rows(buyers, limit, seed)
    hits, days = [], []
    for user, products, market, day in buyers.select("user_id", "product_id", "market_id", "day").iter_rows():
        if market not in model.market_index:
            continue
        answer = model.answer({"user_id": user, "market": market, "k": k, "exclude": [], "explain": False})
        recommended = {item["product_id"] for item in answer["items"]}
        hits.append(float(bool(recommended & set(products))))
        days.append(day.isoformat())
    if not hits:
        return ChampionCheck([row], LiveAccuracy(value=None, observations=0, **base), span)
    by_day: dict[str, list[float]] = {}
    for day, hit in zip(days, hits, strict=True):
        by_day.setdefault(day, []).append(hit)
    live = LiveAccuracy(
        value=float(np.mean(hits)),
        observations=len(hits),
        details={"users": float(len(hits)), "live_days": live_days},
        per_day=tuple((day, float(np.mean(values))) for day, values in sorted(by_day.items())),
        **base,
    )
    return ChampionCheck([row], live, span)
