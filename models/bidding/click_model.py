"""The click (or conversion) model: LightGBM on auction-log features, calibrated on a held-out split.

Features are what is known when the bid request arrives: the market-local hour and weekday, the ad
exchange, slot id and size, region and floor price, plus any `extra_numeric` context columns the
caller adds (campaign and market statistics from the feature store, say). Never the market price:
in a second-price auction it is only revealed after winning. Categorical columns keep the categories seen in
training; unseen values become missing, which LightGBM routes like rare ones.

Training uses the won impressions only (clicks exist only for them). The rows are split in time:
the earlier part trains the trees, the latest `calibration_fraction` fits the calibration map
(isotonic regression, or Platt scaling: a logistic regression on the raw score's logit), so the
calibration is fitted on data the trees never saw, as the bid formula needs probabilities, not
just a ranking.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import lightgbm
import numpy as np
import pandas as pd
import polars as pl
from scipy.interpolate import interp1d
from scipy.special import expit
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression

CATEGORICAL_FEATURES = ("exchange", "slot_id", "slot_size", "region")
NUMERIC_FEATURES = ("hour", "weekday", "slot_width", "slot_height", "floor_price")
PROBABILITY_FLOOR = 1e-6


def auction_features(
    auctions: pl.DataFrame, timezone: str | None, extra_numeric: tuple[str, ...] = ()
) -> pl.DataFrame:
    """The model's input columns from an auctions frame (request_ts in UTC). Without a time zone (a
    frame of several markets) the frame brings its own market-local `hour` and `weekday` columns."""
    if timezone is None:
        hour, weekday = pl.col("hour"), pl.col("weekday")
    else:
        local_ts = pl.col("request_ts").dt.convert_time_zone(timezone)
        hour, weekday = local_ts.dt.hour(), local_ts.dt.weekday()
    return auctions.select(
        hour.cast(pl.Int64).alias("hour"),
        weekday.cast(pl.Int64).alias("weekday"),
        pl.col("exchange").cast(pl.String),
        pl.col("slot_id").cast(pl.String),
        pl.format("{}x{}", "slot_width", "slot_height").alias("slot_size"),
        pl.col("region").cast(pl.String),
        pl.col("slot_width").cast(pl.Int64),
        pl.col("slot_height").cast(pl.Int64),
        pl.col("floor_price").cast(pl.Float64),
        *(pl.col(column).cast(pl.Float64) for column in extra_numeric),
    )


@dataclass(frozen=True)
class ClickModelConfig:
    # shallow, slow and heavily pooled: click logs hold few positives per slot
    n_estimators: int = 200
    learning_rate: float = 0.03
    num_leaves: int = 7
    min_child_samples: int = 300
    reg_lambda: float = 1.0
    calibration: Literal["isotonic", "platt"] = "isotonic"
    calibration_fraction: float = 0.2
    # a subset of CATEGORICAL_FEATURES: ids with hundreds of values (slot, region) and few clicks each
    # are what trees overfit first
    categorical_features: tuple[str, ...] = CATEGORICAL_FEATURES
    seed: int = 0


@dataclass(frozen=True, eq=False)
class CalibrationMap:
    """The fitted calibration map as plain arrays: isotonic knots (x, y), or Platt's (coefficient,
    intercept). `apply` is the one calibration of the bidder: batch scoring in training and the
    served model's single request both call it, and it computes what scikit-learn's fitted
    `IsotonicRegression.predict` / `LogisticRegression.predict_proba` compute, to the bit."""

    kind: Literal["isotonic", "platt"]
    x: np.ndarray
    y: np.ndarray

    @classmethod
    def of_isotonic(cls, fitted: IsotonicRegression) -> CalibrationMap:
        return cls("isotonic", fitted.X_thresholds_.copy(), fitted.y_thresholds_.copy())

    @classmethod
    def of_platt(cls, fitted: LogisticRegression) -> CalibrationMap:
        return cls("platt", fitted.coef_.ravel().copy(), fitted.intercept_.copy())

    def apply(self, raw: np.ndarray) -> np.ndarray:
        """Calibrated probabilities for raw booster probabilities, with the probability floor."""
        raw = np.asarray(raw, dtype=np.float64).reshape(-1)
        if self.kind == "isotonic":
            # scikit-learn's isotonic predict: clip to the fitted range, then linear interpolation
            clipped = np.clip(raw, self.x[0], self.x[-1])
            calibrated = self.y.repeat(clipped.shape) if len(self.y) == 1 else self._interpolate(clipped)
        else:
            # scikit-learn's binary predict_proba: expit of the decision function on the logit
            decision = _logit(raw).reshape(-1, 1) @ self.x.reshape(1, -1).T + self.y
            calibrated = expit(decision.reshape(-1))
        return np.clip(calibrated, PROBABILITY_FLOOR, 1.0)

    def _interpolate(self, values: np.ndarray) -> np.ndarray:
        function: Any = self.__dict__.get("_function")
        if function is None:  # made on first use, so the map pickles as three fields
            function = interp1d(self.x, self.y, kind="linear", bounds_error=False)
            object.__setattr__(self, "_function", function)
        return function(values).astype(values.dtype)

    def __getstate__(self) -> dict[str, Any]:
        return {"kind": self.kind, "x": self.x, "y": self.y}

    def __setstate__(self, state: dict[str, Any]) -> None:
        for name, value in state.items():
            object.__setattr__(self, name, value)


class ClickModel:
    """fit on an auctions frame with a 0/1 label, predict calibrated probabilities."""

    def __init__(
        self,
        timezone: str | None,
        config: ClickModelConfig | None = None,
        extra_numeric: tuple[str, ...] = (),
    ) -> None:
        self.timezone = timezone
        self.config = config or ClickModelConfig()
        self.extra_numeric = tuple(extra_numeric)
        self._booster: lightgbm.LGBMClassifier | None = None
        self._categories: dict[str, list[str]] = {}
        self._calibration: CalibrationMap | None = None

    def fit(self, auctions: pl.DataFrame, label: str = "click") -> ClickModel:
        """Train on the won impressions of `auctions` (sorted by time here), calibrate on the latest part."""
        won = auctions.filter(pl.col("won")).sort("request_ts")
        if won.height < 10:
            raise ValueError(f"{won.height} won impressions: too few to fit a click model")
        features = auction_features(won, self.timezone, self.extra_numeric)
        labels = won[label].cast(pl.Int64).to_numpy()
        if labels.min() == labels.max():
            raise ValueError(f"label {label!r} has a single value: nothing to learn")
        self._categories = {
            column: sorted(features[column].drop_nulls().unique().to_list())
            for column in self.categorical_features
        }
        split = int(won.height * (1 - self.config.calibration_fraction))
        table = self._pandas(features)
        config = self.config
        self._booster = lightgbm.LGBMClassifier(
            n_estimators=config.n_estimators,
            learning_rate=config.learning_rate,
            num_leaves=config.num_leaves,
            min_child_samples=config.min_child_samples,
            reg_lambda=config.reg_lambda,
            random_state=config.seed,
            n_jobs=1,
            verbose=-1,
        )
        self._booster.fit(
            table.iloc[:split], labels[:split], categorical_feature=list(self.categorical_features)
        )
        raw = self._raw(table.iloc[split:])
        held_out = labels[split:]
        if config.calibration == "isotonic":
            isotonic = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(raw, held_out)
            self._calibration = CalibrationMap.of_isotonic(isotonic)
        else:
            platt = LogisticRegression(C=1e6).fit(_logit(raw).reshape(-1, 1), held_out)
            self._calibration = CalibrationMap.of_platt(platt)
        return self

    def predict(self, auctions: pl.DataFrame) -> np.ndarray:
        """Calibrated probabilities, one per row of `auctions`."""
        # isotonic steps can reach 0; the floor keeps a bid from being exactly 0 for what merely ranks low
        return self.calibrate(self.predict_uncalibrated(auctions))

    def predict_uncalibrated(self, auctions: pl.DataFrame) -> np.ndarray:
        if self._booster is None:
            raise RuntimeError("fit the click model first")
        return self._raw(self._pandas(auction_features(auctions, self.timezone, self.extra_numeric)))

    def _raw(self, table: pd.DataFrame) -> np.ndarray:
        assert self._booster is not None
        return self._booster.predict_proba(table)[:, 1]

    @property
    def categorical_features(self) -> tuple[str, ...]:
        unknown = set(self.config.categorical_features) - set(CATEGORICAL_FEATURES)
        if unknown:
            raise ValueError(
                f"categorical_features: unknown {sorted(unknown)} (known: {CATEGORICAL_FEATURES})"
            )
        return tuple(self.config.categorical_features)

    @property
    def feature_names(self) -> tuple[str, ...]:
        """The booster's columns in order: numeric, extra numeric, then categorical."""
        return (*NUMERIC_FEATURES, *self.extra_numeric, *self.categorical_features)

    @property
    def categories(self) -> dict[str, list[str]]:
        """Categories seen in training per categorical column; a value's index is its code."""
        return {column: list(values) for column, values in self._categories.items()}

    @property
    def booster(self) -> lightgbm.Booster:
        if self._booster is None:
            raise RuntimeError("fit the click model first")
        return self._booster.booster_

    def calibrate(self, raw: np.ndarray) -> np.ndarray:
        """The calibration map on raw booster probabilities, with the probability floor."""
        return self.calibration.apply(raw)

    @property
    def calibration(self) -> CalibrationMap:
        """The fitted calibration map (isotonic knots, or Platt's coefficient and intercept)."""
        if self._calibration is None:
            raise RuntimeError("fit the click model first")
        return self._calibration

    def _pandas(self, features: pl.DataFrame) -> pd.DataFrame:
        table = features.select(
            *NUMERIC_FEATURES, *self.extra_numeric, *self.categorical_features
        ).to_pandas()
        for column in self.categorical_features:
            table[column] = pd.Categorical(table[column], categories=self._categories[column])
        return table


def _logit(probabilities: np.ndarray) -> np.ndarray:
    clipped = np.clip(probabilities, PROBABILITY_FLOOR, 1 - PROBABILITY_FLOOR)
    return np.log(clipped / (1 - clipped))
