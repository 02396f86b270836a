"""Lag, rolling-window, calendar and price features for the global gradient-boosted forecaster.

All lags start at `shift` periods, the farthest horizon a model serves, so every feature of a row
`shift` periods or less in the future is already known at the forecast origin: the same code
builds training rows and forecast rows, and no value is ever fed back. The set follows the M5
accuracy winners (Makridakis, Spiliotis and Assimakopoulos, "M5 accuracy competition: results,
findings, and conclusions", IJF 38(4), 2022): recent lags, same-season lags, last year's value,
rolling means and spread, the share of zero periods (intermittency), calendar parts, and price
relative to the series' usual price.

The frame must be complete and sorted (see `series.complete_grid`): a shift of k rows within a
series is then a lag of k periods. Targets here are already divided by the series' scale.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from models.forecasting.series import SeriesSpec

SCALED_TARGET = "_y"
LEVEL = "_level"  # the recent level that features and label are divided by
LABEL = "_label"
DISPERSION = "_dispersion"  # recent spread over recent level: groups series for the intervals
# the recent level never goes below this share of the series' mean: a dormant series stays finite
LEVEL_FLOOR = 0.1


@dataclass(frozen=True)
class LagPlan:
    """Which lags and windows a model whose nearest usable lag is `shift` reads."""

    shift: int
    lags: tuple[int, ...]
    windows: tuple[int, ...]
    spread_window: int
    seasonal_lags: tuple[int, ...]  # same position in the season, averaged into one feature

    @property
    def level_window(self) -> int:
        return self.windows[1]

    @property
    def lookback(self) -> int:
        """Periods of history a forecast row needs behind it."""
        return max(max(self.lags), self.shift + max(self.windows), max(self.seasonal_lags, default=0)) + 1


def lag_plan(shift: int, spec: SeriesSpec) -> LagPlan:
    season = spec.season_length
    first_seasonal = -(-shift // season) * season  # smallest multiple of the season >= shift
    if spec.frequency == "daily":
        recent = tuple(range(shift, shift + 7))
        seasonal = tuple(first_seasonal + 7 * k for k in range(4))
        yearly = (364,) if shift <= 364 else ()
        return LagPlan(
            shift=shift,
            lags=tuple(sorted({*recent, *seasonal, *yearly})),
            windows=(7, 28, 91),
            spread_window=28,
            seasonal_lags=seasonal,
        )
    recent = tuple(range(shift, shift + 4))
    # last year's same week, and its neighbours: holidays move by a week between years
    yearly = tuple(lag for lag in (51, 52, 53) if lag >= shift)
    return LagPlan(
        shift=shift,
        lags=tuple(sorted({*recent, *yearly})),
        windows=(4, 13, 52),
        spread_window=13,
        seasonal_lags=(),
    )


def lag_feature_names(plan: LagPlan) -> list[str]:
    names = [f"lag_{lag}" for lag in plan.lags]
    names += [f"mean_{window}" for window in plan.windows]
    names += [f"std_{plan.spread_window}", f"zero_share_{plan.spread_window}"]
    if plan.seasonal_lags:
        names.append("seasonal_mean")
    return names


def lag_expressions(plan: LagPlan, keys: tuple[str, ...]) -> list[pl.Expr]:
    target = pl.col(SCALED_TARGET)
    shifted = target.shift(plan.shift)
    expressions = [target.shift(lag).over(keys).alias(f"lag_{lag}") for lag in plan.lags]
    expressions += [
        shifted.rolling_mean(window, min_samples=1).over(keys).alias(f"mean_{window}")
        for window in plan.windows
    ]
    window = plan.spread_window
    expressions += [
        shifted.rolling_std(window, min_samples=2).over(keys).alias(f"std_{window}"),
        (shifted == 0)
        .cast(pl.Float32)
        .rolling_mean(window, min_samples=1)
        .over(keys)
        .alias(f"zero_share_{window}"),
    ]
    return expressions


def seasonal_mean_expressions(plan: LagPlan) -> list[pl.Expr]:
    """Evaluated after `lag_expressions`: the seasonal lags are among the lag columns."""
    if not plan.seasonal_lags:
        return []
    return [pl.mean_horizontal([f"lag_{lag}" for lag in plan.seasonal_lags]).alias("seasonal_mean")]


def level_expressions(plan: LagPlan, relative: bool) -> list[pl.Expr]:
    """The row's level (mean of the `level_window` periods before the shift, floored) and the label.

    With `relative`, lags, means, spread and label are divided by that level, so the model learns
    changes relative to where the series stands now; a ramp-up or a new plateau then looks like
    the ones seen in training. Without it the level is 1 (the series' mean, from the target scaling).
    """
    recent = pl.max_horizontal(pl.col(f"mean_{plan.level_window}"), pl.lit(LEVEL_FLOOR))
    dispersion = (pl.col(f"std_{plan.spread_window}") / recent).alias(DISPERSION)
    if not relative:
        return [pl.lit(1.0).alias(LEVEL), pl.col(SCALED_TARGET).alias(LABEL), dispersion]
    return [recent.alias(LEVEL), (pl.col(SCALED_TARGET) / recent).alias(LABEL), dispersion]


def relative_expressions(plan: LagPlan, relative: bool) -> list[pl.Expr]:
    """Evaluated after `level_expressions`: level-dependent features in units of the level."""
    if not relative:
        return []
    names = (
        [f"lag_{lag}" for lag in plan.lags]
        + [f"mean_{w}" for w in plan.windows]
        + [f"std_{plan.spread_window}"]
    )
    names += ["seasonal_mean"] if plan.seasonal_lags else []
    return [(pl.col(name) / pl.col(LEVEL)).alias(name) for name in names] + [
        pl.col(LEVEL).log().cast(pl.Float32).alias("log_level")
    ]


def calendar_feature_names(spec: SeriesSpec) -> list[str]:
    names = ["month", "week_of_year", "day_of_month", "day_of_year"]
    return ["weekday", *names] if spec.frequency == "daily" else names


def calendar_expressions(spec: SeriesSpec) -> list[pl.Expr]:
    day = pl.col(spec.date).dt
    expressions = {
        "weekday": day.weekday(),
        "month": day.month(),
        "week_of_year": day.week(),
        "day_of_month": day.day(),
        "day_of_year": day.ordinal_day(),
    }
    return [expressions[name].cast(pl.Float32).alias(name) for name in calendar_feature_names(spec)]


PRICE_FEATURES = ("price_usd", "price_ratio", "price_momentum")


def price_expressions(spec: SeriesSpec) -> list[pl.Expr]:
    """Price in USD, relative to the series' usual price (`_usual_price`), and to its recent average."""
    if spec.price is None:
        return []
    price = pl.col(spec.price)
    usd = price * pl.col(spec.fx) if spec.fx else price
    recent = price.shift(1).rolling_mean(spec.season_length, min_samples=1).over(spec.keys)
    return [
        usd.cast(pl.Float32).alias("price_usd"),
        (price / pl.col("_usual_price")).cast(pl.Float32).alias("price_ratio"),
        (price / recent).cast(pl.Float32).alias("price_momentum"),
    ]


def price_feature_names(spec: SeriesSpec) -> list[str]:
    return list(PRICE_FEATURES) if spec.price is not None else []
