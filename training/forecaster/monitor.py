"""The forecaster champion's live check: its served forecasts against the demand that has arrived
since it was trained (WAPE of the P50 on LightGBM's series), and the forecast's market x category
mix against demand's (prediction drift)."""

from __future__ import annotations

import math
from datetime import date, timedelta

import polars as pl

from configs.settings import Settings
from training.forecaster.data import daily_units, last_complete_day
from training.monitoring.config import MonitoringConfig
from training.monitoring.drift import DriftRow, classify
from training.monitoring.live import Champion, ChampionCheck, LiveAccuracy
from training.monitoring.psi import share_psi


def live_check(settings: Settings, champion: Champion, config: MonitoringConfig) -> ChampionCheck:
    from features.tables import read_table
    from training.evaluation.forecast import bias, wape

    model = champion.model
    last: date = model.last_date
    daily = daily_units(settings)
    # a day counts once it is over in every market, as the forecaster itself cuts its history
    complete = last_complete_day(settings) or daily["date"].max()
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
