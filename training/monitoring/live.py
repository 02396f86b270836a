"""What the serving champion predicts now, and how right it has been since it was trained, per family.

Each family check loads nothing itself: it gets the champion as serving holds it (the family's
PythonModel from `models:/tradewind-<model>@champion`) and its training run's metrics, and returns
prediction drift rows (PSI, see drift.py) and a `LiveAccuracy`. The choices, per family:

- **forecaster**: the served forecasts are fixed at training (from `last_date` on), so what can drift
  is demand moving away from them. Prediction PSI: the forecast's mix of units over market x category
  against the actual mix on the same days (once actuals have arrived; before that, the first
  `current_days` forecast days against the last `current_days` days of demand it was made from).
  Live accuracy: WAPE and bias of the P50 on the LightGBM series (what the training backtest's
  `lightgbm.wape` scores) over every forecast day that is over in every market (the forecaster's
  own cut, `_last_complete_day`), zero sales included.
- **bidder**: prediction PSI of the click model's pCTR over bid requests, reference vs current
  window. Live accuracy: normalized log loss (log loss / entropy of the observed CTR; raw log loss
  tracks the period's CTR more than the model) of pCTR on won impressions of auctions the champion
  never saw (partitions ingested after its training run started, from `ingest_log.jsonl`) against
  the same ratio of its held-out `click_model.log_loss` and `observed_rate`, with the raw log loss
  and the calibration ratio (mean pCTR / observed CTR) beside it.
- **recommender**: prediction PSI of the category mix of the top-k items recommended to users active
  in the reference window against users active in the current window (the model answers as serving
  does without online features: from the values it holds). Live accuracy: hit rate at k on the
  purchases made after `trained_until` (items not bought before), against the holdout's
  `tradewind.hitrate_at_k`. A live window shorter than the holdout gives users fewer purchases to
  hit, so the figure reads low: it is reported but triggers nothing until the window is as long.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np
import polars as pl

from configs.settings import Settings
from training.monitoring.config import MonitoringConfig
from training.monitoring.drift import DriftRow, WindowSpan, classify, sample_rows, scored_row
from training.monitoring.psi import share_psi


@dataclass(frozen=True)
class Champion:
    """The serving champion: its version, its training run and the loaded PythonModel."""

    command: str
    version: int
    run_id: str | None
    trained_at: datetime | None  # the training run's start
    metrics: Mapping[str, float]
    model: Any
    family_config: Any


@dataclass(frozen=True)
class LiveAccuracy:
    """The champion's error on actuals that arrived after it was trained, beside its training figure."""

    metric: str  # e.g. "wape", "log_loss", "hitrate_at_10"
    higher_is_better: bool
    value: float | None
    training_metric: str  # the champion run's metric it is compared with
    training_value: float | None
    observations: int  # series-days, won impressions, users
    since: str  # what "since training" is, in words
    comparable: bool = True  # False when the live figure cannot be read against the training one yet
    details: Mapping[str, float] = field(default_factory=dict)
    per_day: tuple[tuple[str, float], ...] = ()
    note: str = ""

    @property
    def error_change(self) -> float | None:
        """How much worse than at training, relative (0.1: 10% worse; negative: better)."""
        if self.value is None or self.training_value is None or self.training_value == 0:
            return None
        change = (self.value - self.training_value) / abs(self.training_value)
        return -change if self.higher_is_better else change


@dataclass(frozen=True)
class ChampionCheck:
    predictions: list[DriftRow]
    live: LiveAccuracy
    span: WindowSpan | None = None


# ---------------------------------------------------------------------------------------------
# forecaster


def check_forecaster(settings: Settings, champion: Champion, config: MonitoringConfig) -> ChampionCheck:
    from features.tables import read_table
    from training.evaluation.forecast import bias, wape
    from training.forecaster import _daily_units, _last_complete_day

    model = champion.model
    last: date = model.last_date
    daily = _daily_units(settings)
    # a day counts once it is over in every market, as the forecaster itself cuts its history
    complete = _last_complete_day(settings) or daily["date"].max()
    keys = ["product_id", "market_id"]
    lightgbm = pl.DataFrame(
        {
            "product_id": [product for product, _ in model.row_of],
            "market_id": [market for _, market in model.row_of],
            "lightgbm": [bool(model.from_lightgbm[row]) for row in model.row_of.values()],
        }
    )
    categories = read_table(settings.contract_dir, "products").select("product_id", "category")
    forecasts = (
        model.forecast_frame()
        .join(lightgbm, on=keys, how="left")
        .join(categories, on="product_id", how="left")
        .with_columns(pl.col("category").fill_null("unknown"))
    )
    arrived = (
        forecasts.filter(pl.col("date") <= complete)
        .join(daily, on=[*keys, "date"], how="left")
        .with_columns(pl.col("units").fill_null(0.0))
    )

    # prediction drift: the forecast's market x category mix against demand's
    current_days = config.windows.current_days
    if arrived.height:
        forecast_side, actual_side = arrived, arrived
        compared = f"forecast vs actual demand on {arrived['date'].n_unique()} days after {last}"
    else:
        forecast_side = forecasts.filter(pl.col("date") <= last + timedelta(days=current_days))
        recent = daily.filter(
            (pl.col("date") > last - timedelta(days=current_days)) & (pl.col("date") <= last)
        )
        served = forecasts.select(*keys, "category").unique()
        actual_side = served.join(recent, on=keys, how="inner")
        compared = f"first {current_days} forecast days vs the last {current_days} days up to {last}"
    mix = (pl.col("market_id") + "/" + pl.col("category")).alias("segment")
    forecast_mix = dict(forecast_side.group_by(mix).agg(pl.col("mean").sum()).iter_rows())
    actual_mix = dict(actual_side.group_by(mix).agg(pl.col("units").sum()).iter_rows())
    name = "prediction.forecast_mix"
    actual_units = sum(actual_mix.values())
    if actual_units < config.psi.min_rows or sum(forecast_mix.values()) <= 0:
        note = f"{compared}: {actual_units:.0f} actual units, need {config.psi.min_rows}"
        row = DriftRow(name, "prediction", "skipped", None, 0, round(actual_units), note)
    else:
        result = share_psi(forecast_mix, actual_mix, config.psi.epsilon)
        status = classify(result.value, config.thresholds.prediction_psi)
        row = DriftRow(
            name,
            "prediction",
            status,
            result.value,
            result.reference_rows,
            result.current_rows,
            compared,
            result,
        )

    scored = arrived.filter(pl.col("lightgbm")) if arrived.height else arrived
    training_metric = "lightgbm.wape"
    since = f"forecast days after {last} (the champion's last training day) up to {complete}, complete"
    base = {
        "metric": "wape",
        "higher_is_better": False,
        "training_metric": training_metric,
        "training_value": champion.metrics.get(training_metric),
        "since": since,
    }
    if scored.height == 0 or float(scored["units"].sum()) <= 0:
        live = LiveAccuracy(
            value=None,
            observations=scored.height,
            note="no demand has arrived for the forecast days yet",
            **base,
        )
        return ChampionCheck([row], live)
    actual, p50 = scored["units"].to_numpy(), scored["p50"].to_numpy()
    per_day = tuple(
        (day.isoformat(), wape(part["units"].to_numpy(), part["p50"].to_numpy()))
        for (day,), part in scored.sort("date").group_by("date", maintain_order=True)
        if float(part["units"].sum()) > 0
    )
    live = LiveAccuracy(
        value=wape(actual, p50),
        observations=scored.height,
        details={
            "bias": bias(actual, p50),
            "actual_units": float(actual.sum()),
            "forecast_units": float(p50.sum()),
            "days": float(scored["date"].n_unique()),
            "training_bias": float(champion.metrics.get("lightgbm.bias", math.nan)),
        },
        per_day=per_day,
        **base,
    )
    return ChampionCheck([row], live)


# ---------------------------------------------------------------------------------------------
# bidder


def seen_until(settings: Settings, table: str, column: str, trained_at: datetime | None) -> datetime | None:
    """The newest `column` value in the contract partitions of `table` that were last ingested before
    `trained_at` (from `ingest_log.jsonl`): what the champion trained on. None when unknown."""
    from features.tables import partition_path

    log = settings.root / "ingest_log.jsonl"
    if trained_at is None or not log.exists():
        return None
    last_ingest: dict[str, datetime] = {}
    for line in log.read_text().splitlines():
        if not line.strip():
            continue
        entry = json.loads(line)
        if entry.get("table") != table:
            continue
        moment = datetime.fromisoformat(entry["ingested_at"])
        moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
        previous = last_ingest.get(entry["partition"])
        last_ingest[entry["partition"]] = moment if previous is None else max(previous, moment)
    paths = [
        path
        for partition, moment in last_ingest.items()
        if moment < trained_at and (path := partition_path(settings.contract_dir, table, partition)).exists()
    ]
    if not paths:
        return None
    return pl.scan_parquet(paths).select(pl.col(column).max()).collect().item()


def normalized_log_loss(loss: float | None, rate: float | None) -> float | None:
    """Log loss over the entropy of the observed click rate (He et al., "Practical Lessons from
    Predicting Clicks on Ads at Facebook", 2014): 1 is no better than always predicting the rate.
    Raw log loss moves with the period's CTR alone; this does not. None when undefined."""
    if loss is None or rate is None or not 0.0 < rate < 1.0:
        return None
    entropy = -(rate * math.log(rate) + (1 - rate) * math.log(1 - rate))
    return loss / entropy


def check_bidder(settings: Settings, champion: Champion, config: MonitoringConfig) -> ChampionCheck:
    from sklearn.metrics import log_loss

    from training.families import family

    model = champion.model
    data = family("bidder").training_set(settings, champion.family_config).data
    requests = data.requests
    frame = requests.select("request_ts", "local_date", "won", "click").with_columns(
        pl.Series("pctr", model.click_model.predict(requests), dtype=pl.Float64)
    )
    span = WindowSpan.ending(frame["request_ts"].max(), config)
    stamp = pl.col("request_ts")
    reference = frame.filter((stamp > span.reference_start) & (stamp <= span.current_start))
    current = frame.filter(stamp > span.current_start)
    limit, seed = config.psi.max_rows, config.live.seed
    row = scored_row(
        "prediction.pctr",
        "prediction",
        sample_rows(reference, limit, seed)["pctr"],
        sample_rows(current, limit, seed)["pctr"],
        config,
        config.thresholds.prediction_psi,
    )
    cutoff = seen_until(settings, "auctions", "request_ts", champion.trained_at)
    training_loss = champion.metrics.get("click_model.log_loss")
    training_rate = champion.metrics.get("click_model.observed_rate")
    base = {
        "metric": "normalized_log_loss",
        "higher_is_better": False,
        "training_metric": "click_model.log_loss / H(click_model.observed_rate)",
        "training_value": normalized_log_loss(training_loss, training_rate),
    }
    if cutoff is None:
        live = LiveAccuracy(
            value=None,
            observations=0,
            since="unknown",
            note="no ingest record of the auctions the champion trained on (ingest_log.jsonl)",
            **base,
        )
        return ChampionCheck([row], live, span)
    won = frame.filter((stamp > cutoff) & pl.col("won") & pl.col("click").is_not_null())
    since = f"won impressions of auctions after {cutoff:%Y-%m-%d %H:%M} UTC (the champion's newest)"
    if won.height == 0:
        live = LiveAccuracy(
            value=None, observations=0, since=since, note="no won impression since the champion", **base
        )
        return ChampionCheck([row], live, span)

    def scores(part: pl.DataFrame) -> tuple[float, float]:
        labels = part["click"].cast(pl.Int64).to_numpy()
        loss = float(log_loss(labels, np.clip(part["pctr"].to_numpy(), 1e-7, 1 - 1e-7), labels=[0, 1]))
        return loss, float(labels.mean())

    loss, observed = scores(won)
    per_day = []
    for (day,), part in won.sort("local_date").group_by("local_date", maintain_order=True):
        value = normalized_log_loss(*scores(part))
        if value is not None:
            per_day.append((day.isoformat(), value))
    mean_pctr = float(won["pctr"].mean())
    details = {
        "log_loss": loss,
        "mean_pctr": mean_pctr,
        "observed_ctr": observed,
        "clicks": float(won["click"].cast(pl.Int64).sum()),
    }
    if observed > 0:
        details["calibration_ratio"] = mean_pctr / observed
    if training_loss is not None:
        details["training_log_loss"] = training_loss
    notes = []
    if observed == 0:
        notes.append("no click since the champion: normalized log loss undefined")
    if base["training_value"] is None:
        notes.append("no click on the champion's held-out days (or no figure): nothing to compare with")
    live = LiveAccuracy(
        value=normalized_log_loss(loss, observed),
        observations=won.height,
        since=since,
        details=details,
        per_day=tuple(per_day),
        note="; ".join(notes),
        **base,
    )
    return ChampionCheck([row], live, span)


# ---------------------------------------------------------------------------------------------
# recommender


def _recommended_categories(model: Any, users: pl.DataFrame, k: int) -> list[str]:
    categories = []
    for user, market in users.select("user_id", "market_id").iter_rows():
        if market not in model.market_index:
            continue
        answer = model.answer({"user_id": user, "market": market, "k": k, "exclude": [], "explain": False})
        for item in answer["items"]:
            categories.append(model.categories[model.item_category[model.item_index[item["product_id"]]]])
    return categories


def check_recommender(settings: Settings, champion: Champion, config: MonitoringConfig) -> ChampionCheck:
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
        pl.Series(_recommended_categories(model, reference, k), dtype=pl.String),
        pl.Series(_recommended_categories(model, current, k), dtype=pl.String),
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
    live_days = (newest - cutoff).total_seconds() / 86_400
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


CHECKS: dict[str, Callable[[Settings, Champion, MonitoringConfig], ChampionCheck]] = {
    "forecaster": check_forecaster,
    "bidder": check_bidder,
    "recommender": check_recommender,
}
