"""The forecaster's validated YAML config (`configs/forecaster.yaml`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from configs import StrictModel
from configs.families import FORECASTER

CONFIG_FILE = f"configs/{FORECASTER.config_name}.yaml"  # named in config errors


class SeriesSelectionConfig(StrictModel):
    top_n: int | None = 300
    min_active_days: int = 14


class BacktestConfig(StrictModel):
    folds: int = 3
    step: int | None = None
    # tuning scores a trial on this many folds that end where the test folds begin
    validation_folds: int = Field(2, ge=1)


class LightGBMParamsConfig(StrictModel):
    # tweedie: the mean of intermittent demand (M5 style); quantile (with alpha 0.5): the median,
    # which absolute-error metrics such as MASE score (the served `mean` is then that model's output)
    objective: Literal["tweedie", "poisson", "quantile"] = "tweedie"
    alpha: float = 0.5
    learning_rate: float = 0.1
    num_leaves: int = 31
    min_data_in_leaf: int = 50
    feature_fraction: float = 0.6
    lambda_l2: float = 1.0
    tweedie_variance_power: float = 1.1
    max_bin: int = 63


class LightGBMConfig(StrictModel):
    num_boost_round: int = 300
    early_stopping_rounds: int = 15
    num_threads: int = 2
    interval_bins: int = 5
    relative_level: bool = True
    params: LightGBMParamsConfig = LightGBMParamsConfig()


class ProphetConfig(StrictModel):
    enabled: bool = False
    max_series: int = 20
    ray_address: str | None = None
    num_cpus: int = 2
    uncertainty_samples: int = 100


class HolidayPlotConfig(StrictModel):
    event: str = "Black Friday"
    days_before: int = 7
    series: int = 2


class ForecasterConfig(StrictModel):
    horizon: int = 28
    history_days: int | None = None
    series: SeriesSelectionConfig = SeriesSelectionConfig()
    backtest: BacktestConfig = BacktestConfig()
    lightgbm: LightGBMConfig = LightGBMConfig()
    prophet: ProphetConfig = ProphetConfig()
    oracle: bool = True
    oracle_draws: int = 400
    holiday_plot: HolidayPlotConfig = HolidayPlotConfig()
