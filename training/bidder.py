"""The bidding family: `tradewind train bidder`, `tradewind tune bidder` and the served bidder.

Training set (`training_set`): the contract tables `auctions`, `campaigns`, `markets` and `fx_rates`
of the data folder. Every request is placed on its campaign market's local day (hour, weekday, date)
and its prices are converted to one currency (`data.currency`, USD by default) with that day's rate.
The Feast feature service `bidding` adds context known before the day starts (the campaign's last 7
days' CTR, CVR, win rate and mean price, the market's active users), joined point in time at the
local midnight of each campaign-day. Per campaign, the latest `test_days` days are held out; the
`train_days` before them are what the bidders are tuned and trained on; the click model learns
from the won impressions of the `click_model_days` before the held-out days.

Fit (`fit`): the calibrated LightGBM click model (models.bidding.click_model) gives every request a
pCTR; each campaign gets its lambda prior (models.bidding.baselines.LambdaPrior) from its training
days; the DQN (models.bidding.dqn, pacing mode) learns on generated days from all campaigns'
training days at once, each campaign's prices divided by its median so one agent fits all. It picks
lambda = the campaign's prior lambda for the budget x a factor, from the time left, the budget left
and the recent win rate: what the server keeps per campaign (the served-model contract).

Evaluation (`evaluate`): training.evaluation.bidding on the held-out days at 1/2 .. 1/16 of each
day's unconstrained spend, the DQN against constant, linear, best fixed lambda and PID bidders tuned
per campaign on its training days, and the hindsight optimum. Won impressions are credited with the
simulator's true click probability when its ground truth is in the data folder (evaluation only,
never a feature), else with the pCTR. Primary metric: the DQN's mean % of the hindsight optimum.

The served model (`BidderModel.answer`): pCTR from the request context through the booster on one
numpy row and the calibration map as a table (no pandas, no torch), lambda from the campaign state
through the Q-network's greedy action in numpy, bid = pCTR / lambda in the campaign's currency per
impression, cut to the budget left (0 once spent).

Retraining gate (`compare_on_holdout`): the champion's and a challenger's DQN policies, each with its
own click model, replayed on the same held-out days and credited with the same clicks (see
`compare_served_models`), scored as % of the hindsight optimum.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
import polars as pl
from mlflow.pyfunc import PythonModel
from pydantic import Field

from configs import StrictModel
from configs.families import BIDDER
from configs.settings import Settings
from models.bidding.auction import AuctionType, guard_bid
from models.bidding.baselines import LambdaPrior
from models.bidding.click_model import CATEGORICAL_FEATURES, PROBABILITY_FLOOR, ClickModel, ClickModelConfig
from models.bidding.days import AuctionDay, days_from_frame, unconstrained_spend
from models.bidding.dqn import GreedyActor
from models.bidding.environment import paced_lambda
from models.bidding.learning_curve import LearningCurve
from models.bidding.policy import pacing_features, step_of
from tracking.registry import pinned_requirements
from training.pipeline import Evaluation, HoldoutComparison, Reporter, TrainedModel, TrainingSet

if TYPE_CHECKING:
    import optuna

    from models.bidding.dqn import DQNConfig
    from training.evaluation.bidding import BiddingEvaluation

logger = logging.getLogger(__name__)

FEATURE_SERVICE = BIDDER.feature_service
DQN_POLICY = "dqn"
# the feature service's columns the click model reads (Feast `<view>__<feature>` names)
CONTEXT_FEATURES: tuple[str, ...] = (
    "campaign_stats__ctr_7d",
    "campaign_stats__cvr_7d",
    "campaign_stats__win_rate_7d",
    "campaign_stats__avg_market_price_usd_7d",
    "market_daily__active_users_1d",
)
KNOWN_USER = "known_user"  # 1 when the request comes from a recognised marketplace user
CONTRACT_TABLES = ("auctions", "campaigns", "markets", "fx_rates")
TIGHTEST_FRACTIONS = (1 / 8, 1 / 16)
MIN_BUDGET_FRACTION = 1 / 128
# what loading the served model imports beyond MLflow's core (models.bidding pulls torch and gymnasium
# in with the DQN's classes, though answering never calls them)
SERVED_PACKAGES = (
    "lightgbm",
    "scikit-learn",
    "polars",
    "torch",
    "gymnasium",
)  # the lambda prior's range: budgets below it bid as if at it


# ---------------------------------------------------------------------------------------------
# config


class DataSettings(StrictModel):
    test_days: int = Field(7, ge=1)
    train_days: int = Field(28, ge=2)
    click_model_days: int = Field(180, ge=7)
    min_requests_per_day: int = Field(40, ge=1)
    min_train_days: int = Field(7, ge=2)
    currency: str = "USD"
    credit_true_clicks: bool = True


class ClickModelSettings(StrictModel):
    n_estimators: int = Field(200, ge=1)
    learning_rate: float = Field(0.05, gt=0)
    num_leaves: int = Field(15, ge=2)
    min_child_samples: int = Field(200, ge=1)
    reg_lambda: float = Field(1.0, ge=0)
    calibration: Literal["isotonic", "platt"] = "platt"
    calibration_fraction: float = Field(0.2, gt=0, lt=1)
    categorical_features: tuple[Literal["exchange", "slot_id", "slot_size", "region"], ...] = (
        "exchange",
        "slot_size",
    )


class DQNSettings(StrictModel):
    episodes: int = Field(300, ge=1)
    hidden_size: int = Field(64, ge=4)
    learning_rate: float = Field(1e-3, gt=0)
    batch_size: int = Field(128, ge=8)
    n_step: int = Field(8, ge=1)
    updates_per_episode: int = Field(8, ge=1)
    target_update_every: int = Field(250, ge=1)
    exploration_fraction: float = Field(0.5, gt=0, le=1)
    epsilon_end: float = Field(0.05, ge=0, le=1)
    validation_every: int = Field(50, ge=1)
    validation_episodes: int = Field(12, ge=1)
    # the latest training days only generate validation episodes (0: validate on all training days)
    validation_holdout_days: int = Field(0, ge=0)
    n_steps: int = Field(48, ge=2)
    lambda_range: float = Field(0.6, gt=0, le=5)
    n_actions: int = Field(9, ge=3)
    pacing_gain: float = Field(4.0, ge=0)


class EvaluationSettings(StrictModel):
    budget_fractions: tuple[float, ...] = (0.5, 0.25, 0.125, 0.0625)
    tuning_grid_size: int = Field(60, ge=2)  # bid levels tried when tuning constant and linear bidding
    replay: Literal["requests", "steps"] = "steps"
    pacing_budget_fraction: float = Field(0.125, gt=0, le=1)
    auction_type: AuctionType = AuctionType.SECOND_PRICE


class BidderConfig(StrictModel):
    seed: int = 0
    data: DataSettings = DataSettings()
    click_model: ClickModelSettings = ClickModelSettings()
    dqn: DQNSettings = DQNSettings()
    evaluation: EvaluationSettings = EvaluationSettings()


# ---------------------------------------------------------------------------------------------
# the training set


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

    joined = historical_features(settings, entities, FEATURE_SERVICE)
    return joined.select(
        "campaign_id", "local_date", *(pl.col(name).cast(pl.Float64) for name in CONTEXT_FEATURES)
    )


# ---------------------------------------------------------------------------------------------
# days, priors and policies


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
    return data.requests.filter(pl.col("role").is_not_null())


def scaled_day(day: AuctionDay, factor: float) -> AuctionDay:
    """The day with every price multiplied by `factor`: the same auctions in another money unit."""
    return replace(day, market_price=day.market_price * factor, floor_price=day.floor_price * factor)


def price_scale(days: Sequence[AuctionDay]) -> float:
    prices = np.concatenate([day.price_to_beat for day in days])
    positive = prices[prices > 0]
    return float(np.median(positive)) if len(positive) else 1.0


def dqn_config(config: BidderConfig, params: Mapping[str, Any]) -> DQNConfig:
    from models.bidding.dqn import DQNConfig

    settings = config.dqn.model_copy(
        update={key: value for key, value in params.items() if key in DQNSettings.model_fields}
    )
    factors = tuple(
        float(f)
        for f in np.exp(np.linspace(-settings.lambda_range, settings.lambda_range, settings.n_actions))
    )
    return DQNConfig(
        episodes=settings.episodes,
        hidden_size=settings.hidden_size,
        learning_rate=settings.learning_rate,
        batch_size=settings.batch_size,
        n_step=settings.n_step,
        updates_per_episode=settings.updates_per_episode,
        target_update_every=settings.target_update_every,
        exploration_fraction=settings.exploration_fraction,
        epsilon_end=settings.epsilon_end,
        validation_every=settings.validation_every,
        validation_episodes=settings.validation_episodes,
        validation_holdout_days=settings.validation_holdout_days,
        n_steps=settings.n_steps,
        lambda_factors=factors,
        action_mode="absolute",
        pacing_gain=settings.pacing_gain,
        auction_type=config.evaluation.auction_type,
        seed=config.seed,
    )


def click_model_config(config: BidderConfig, params: Mapping[str, Any]) -> ClickModelConfig:
    settings = config.click_model
    overrides = {
        key.removeprefix("click_"): value for key, value in params.items() if key.startswith("click_")
    }
    return ClickModelConfig(**{**settings.model_dump(), **overrides, "seed": config.seed})


# ---------------------------------------------------------------------------------------------
# the served model


@dataclass(frozen=True)
class ServedCampaign:
    campaign_id: str
    market_id: str
    currency: str
    to_target: float  # campaign currency -> the prior's currency
    reference_spend: float  # mean unconstrained daily spend of its training days, target currency
    prior: LambdaPrior  # lambda for a budget fraction, in the target currency
    example_budget: float  # its daily budget, for the smoke request

    def prior_lambda(self, budget_fraction: float) -> float:
        """`prior(budget_fraction)` with plain floats: the same log-log interpolation, no numpy call."""
        log_fraction = math.log(budget_fraction)
        log_fractions = [math.log(f) for f in self.prior.budget_fractions]
        lambdas = self.prior.lambdas
        if log_fraction <= log_fractions[0]:
            return lambdas[0]
        for index in range(1, len(log_fractions)):
            if log_fraction <= log_fractions[index]:
                low, high = log_fractions[index - 1], log_fractions[index]
                weight = (log_fraction - low) / (high - low)
                return math.exp(
                    (1 - weight) * math.log(lambdas[index - 1]) + weight * math.log(lambdas[index])
                )
        return lambdas[-1]


class SingleRowBooster:
    """A LightGBM booster's probability for one numpy row through LightGBM's C API single-row fast
    path (`LGBM_BoosterPredictForMatSingleRowFast`): ~10 us where `Booster.predict` spends ~100 us
    on checks and conversions. The C handle is made on first use, so the object pickles."""

    def __init__(self, booster: Any, n_features: int) -> None:
        self.booster = booster  # lightgbm.Booster
        self.n_features = n_features
        self._fast: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {"booster": self.booster, "n_features": self.n_features}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.booster, self.n_features, self._fast = state["booster"], state["n_features"], None

    def _init(self) -> None:
        import ctypes

        from lightgbm.basic import _LIB, _safe_call

        handle = ctypes.c_void_p()
        _safe_call(
            _LIB.LGBM_BoosterPredictForMatSingleRowFastInit(
                self.booster._handle,
                ctypes.c_int(0),  # C_API_PREDICT_NORMAL: the probability
                ctypes.c_int(0),  # from the first iteration
                ctypes.c_int(-1),  # to the best (all)
                ctypes.c_int(1),  # C_API_DTYPE_FLOAT64
                ctypes.c_int32(self.n_features),
                b"num_threads=1",
                ctypes.byref(handle),
            )
        )
        self._out_len = ctypes.c_int64(0)
        self._result = np.zeros(1, dtype=np.float64)
        self._result_pointer = self._result.ctypes.data_as(ctypes.POINTER(ctypes.c_double))
        self._fast = handle
        self._predict = _LIB.LGBM_BoosterPredictForMatSingleRowFast
        self._safe_call = _safe_call
        self._byref = ctypes.byref
        self._void_p = ctypes.c_void_p
        self._free = _LIB.LGBM_FastConfigFree

    def __call__(self, row: np.ndarray) -> float:
        if self._fast is None:
            self._init()
        row = np.ascontiguousarray(row, dtype=np.float64)
        self._safe_call(
            self._predict(
                self._fast, self._void_p(row.ctypes.data), self._byref(self._out_len), self._result_pointer
            )
        )
        return float(self._result[0])

    def __del__(self) -> None:
        if getattr(self, "_fast", None) is not None:
            self._free(self._fast)
            self._fast = None


@dataclass(frozen=True)
class FastClickScorer:
    """The click model for one request: the booster on a numpy row, the calibration map inline."""

    predict_raw: SingleRowBooster
    numeric: tuple[str, ...]  # numeric columns in booster order (extra context included)
    codes: Mapping[str, Mapping[str, int]]  # categorical column (booster order) -> category -> code
    calibration_kind: str
    calibration_x: np.ndarray
    calibration_y: np.ndarray

    @classmethod
    def of(cls, model: ClickModel) -> FastClickScorer:
        kind, x, y = model.calibration_map
        numeric = tuple(name for name in model.feature_names if name not in CATEGORICAL_FEATURES)
        categories = model.categories
        codes = {
            column: {value: index for index, value in enumerate(categories[column])}
            for column in model.categorical_features
        }
        return cls(SingleRowBooster(model.booster, len(model.feature_names)), numeric, codes, kind, x, y)

    def row(self, numeric: Mapping[str, float], categorical: Mapping[str, str | None]) -> np.ndarray:
        values = [numeric.get(name, math.nan) for name in self.numeric]
        for column, codes in self.codes.items():
            code = codes.get(categorical.get(column) or "")
            values.append(math.nan if code is None else float(code))
        return np.array(values, dtype=np.float64)

    def probability(self, row: np.ndarray) -> float:
        raw = self.predict_raw(row)
        if self.calibration_kind == "isotonic":
            calibrated = float(np.interp(raw, self.calibration_x, self.calibration_y))
        else:
            clipped = min(max(raw, PROBABILITY_FLOOR), 1 - PROBABILITY_FLOOR)
            logit = math.log(clipped / (1 - clipped))
            calibrated = 1 / (
                1 + math.exp(-(float(self.calibration_x[0]) * logit + float(self.calibration_y[0])))
            )
        return min(max(calibrated, PROBABILITY_FLOOR), 1.0)


STATE_FIELDS = ("budget", "spent", "time_fraction", "recent_win_rate", "recent_cpc", "recent_ctr")
REQUEST_FIELDS = (
    "hour",
    "weekday",
    "exchange",
    "slot",
    "slot_width",
    "slot_height",
    "region",
    "floor_price",
    KNOWN_USER,
)
# the request fields each categorical input is made of
CATEGORICAL_REQUEST_FIELDS = {
    "exchange": ("exchange",),
    "slot_id": ("slot",),
    "slot_size": ("slot_width", "slot_height"),
    "region": ("region",),
}


class BidderModel(PythonModel):
    """The registered bidder: one campaign's bid for one request, from its served state.

    Request: {"campaign_id", "state": {budget, spent, time_fraction, recent_win_rate, recent_cpc,
    recent_ctr}, "request": {hour (0-23, market-local), exchange, slot, region, floor_price (CPM, the
    campaign's currency), optional weekday (1 = Monday), slot_width, slot_height, known_user}}.
    Budget, spent and the bid are in the campaign's currency; the bid is per impression. Response:
    {"bid", "pctr", "lambda"} with bid = pCTR / lambda before the budget guard.
    """

    feature_service = FEATURE_SERVICE

    def __init__(
        self,
        click_model: ClickModel,
        campaigns: Mapping[str, ServedCampaign],
        actor_weights: Mapping[str, np.ndarray],
        lambda_factors: tuple[float, ...],
        n_steps: int,
        currency: str,
        curve: LearningCurve,
        pacing_gain: float = 0.0,
    ) -> None:
        self.click_model = click_model
        self.scorer = FastClickScorer.of(click_model)
        self.required_fields = (
            "hour",
            "floor_price",
            *(name for column in self.scorer.codes for name in CATEGORICAL_REQUEST_FIELDS[column]),
        )
        self.campaigns = dict(campaigns)
        self.actor_weights = dict(actor_weights)
        self.actor = GreedyActor(self.actor_weights)  # type: ignore[arg-type]
        self.lambda_factors = lambda_factors
        self.n_steps = n_steps
        self.currency = currency
        self.curve = curve
        self.pacing_gain = pacing_gain

    # -- the fast path ------------------------------------------------------------------------

    def answer(self, request: dict, online: dict | None = None) -> dict:
        campaign = self._campaign(request.get("campaign_id"))
        state = _mapping(request, "state")
        context = _mapping(request, "request")
        budget = _number(state, "budget", "state", low=0.0)
        spent = _number(state, "spent", "state", low=0.0)
        time_fraction = _number(state, "time_fraction", "state", low=0.0, high=1.0)
        win_rate = _number(state, "recent_win_rate", "state", low=0.0, high=1.0, default=0.0)
        for optional in ("recent_cpc", "recent_ctr"):
            _number(state, optional, "state", low=0.0, default=0.0)
        pctr = self.scorer.probability(self.scorer.row(*self._features(campaign, context, online)))
        bid_lambda = self.lambda_for(campaign, budget, spent, time_fraction, win_rate)
        remaining = budget - spent
        bid = guard_bid(pctr / bid_lambda, remaining) if remaining > 0 else 0.0
        return {"bid": float(bid), "pctr": float(pctr), "lambda": float(bid_lambda)}

    def lambda_for(
        self, campaign: ServedCampaign, budget: float, spent: float, time_fraction: float, win_rate: float
    ) -> float:
        """The greedy action's lambda for the step of `time_fraction`, in the campaign's currency."""
        if budget <= 0:
            return campaign.prior_lambda(1.0) * campaign.to_target
        fraction = min(max(budget * campaign.to_target / campaign.reference_spend, MIN_BUDGET_FRACTION), 1.0)
        time_left = 1.0 - step_of(time_fraction, self.n_steps) / self.n_steps
        budget_left = max(budget - spent, 0.0) / budget
        action = self.actor(pacing_features(time_left, budget_left, win_rate))
        factor = self.lambda_factors[action]
        target_lambda = paced_lambda(
            campaign.prior_lambda(fraction), time_left, budget_left, factor, self.pacing_gain
        )
        # bid_target = pCTR / lambda_target; in the campaign's money the lambda scales by the rate
        return target_lambda * campaign.to_target

    def _campaign(self, campaign_id: Any) -> ServedCampaign:
        if not isinstance(campaign_id, str):
            raise ValueError(f"campaign_id: expected a string, got {campaign_id!r}")
        campaign = self.campaigns.get(campaign_id)
        if campaign is None:
            known = ", ".join(sorted(self.campaigns)[:20])
            raise ValueError(f"campaign_id: unknown campaign {campaign_id!r} (known: {known})")
        return campaign

    def _features(
        self, campaign: ServedCampaign, context: Mapping[str, Any], online: Mapping[str, Any] | None
    ) -> tuple[dict[str, float], dict[str, str | None]]:
        required = self.required_fields
        for name in required:
            if context.get(name) is None:
                raise ValueError(f"request.{name}: missing (the click model needs {', '.join(required)})")
        hour = _number(context, "hour", "request", low=0, high=23)
        if hour != int(hour):
            raise ValueError(f"request.hour: expected a whole hour 0-23, got {context['hour']!r}")
        weekday = _number(context, "weekday", "request", low=1, high=7, default=math.nan)
        width = _number(context, "slot_width", "request", low=0, default=math.nan)
        height = _number(context, "slot_height", "request", low=0, default=math.nan)
        floor = _number(context, "floor_price", "request", low=0.0)
        known_user = context.get(KNOWN_USER, False)
        if not isinstance(known_user, bool | int | float):
            raise ValueError(f"request.{KNOWN_USER}: expected true or false, got {known_user!r}")
        numeric = {
            "hour": hour,
            "weekday": weekday,
            "slot_width": width,
            "slot_height": height,
            "floor_price": floor * campaign.to_target,
            KNOWN_USER: float(bool(known_user)),
        }
        for name in self.click_model.extra_numeric:
            if name.startswith(("campaign_stats__", "market_daily__")):
                numeric[name] = _online_value(online, name)
        categorical: dict[str, str | None] = {}
        for name, column in (("exchange", "exchange"), ("slot", "slot_id"), ("region", "region")):
            value = context.get(name)
            if value is not None and not isinstance(value, str):
                raise ValueError(f"request.{name}: expected a string, got {value!r}")
            categorical[column] = value
        categorical["slot_size"] = (
            f"{int(width)}x{int(height)}" if math.isfinite(width) and math.isfinite(height) else None
        )
        return numeric, categorical

    # -- the contract's other methods ---------------------------------------------------------

    def online_entities(self, request: dict) -> list[dict] | None:
        campaign = self._campaign(request.get("campaign_id"))
        return [{"campaign_id": campaign.campaign_id, "market_id": campaign.market_id}]

    def smoke_request(self) -> dict:
        campaign = self.campaigns[sorted(self.campaigns)[0]]

        def seen(column: str, default: str) -> str:
            return next(iter(self.scorer.codes.get(column, {})), default)

        exchange, slot, region = seen("exchange", "adx1"), seen("slot_id", "slot"), seen("region", "region")
        return {
            "campaign_id": campaign.campaign_id,
            "state": {
                "budget": campaign.example_budget,
                "spent": campaign.example_budget / 4,
                "time_fraction": 0.3,
                "recent_win_rate": 0.4,
                "recent_cpc": 0.0,
                "recent_ctr": 0.0,
            },
            "request": {
                "hour": 7,
                "weekday": 3,
                "exchange": exchange,
                "slot": slot,
                "slot_width": 300,
                "slot_height": 250,
                "region": region,
                "floor_price": 0.0,
                KNOWN_USER: False,
            },
        }

    def describe(self) -> dict:
        return {
            "campaigns": len(self.campaigns),
            "markets": sorted({campaign.market_id for campaign in self.campaigns.values()}),
            "n_steps": self.n_steps,
            "lambda_factors": [round(factor, 4) for factor in self.lambda_factors],
            "pacing_gain": self.pacing_gain,
            "prior_currency": self.currency,
            "click_features": list(self.click_model.feature_names),
            "best_validation_return": max(self.curve.validation_returns, default=float("nan")),
        }

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        """One flat row per request: campaign_id, the state's fields, the request's fields, and
        optionally online feature columns (`<view>__<feature>`)."""
        answers = []
        for row in model_input.to_dict(orient="records"):
            present = {key: _plain(value) for key, value in row.items() if not _missing(value)}
            request = {
                "campaign_id": present.get("campaign_id"),
                "state": {key: present[key] for key in STATE_FIELDS if key in present},
                "request": {key: present[key] for key in REQUEST_FIELDS if key in present},
            }
            online = {key: value for key, value in present.items() if "__" in key}
            answers.append(self.answer(request, online or None))
        return pd.DataFrame(answers, columns=["bid", "pctr", "lambda"])

    def flat_example(self) -> pd.DataFrame:
        """The smoke request as `predict`'s one flat row; whole numbers as floats, so the signature
        accepts a batch where an optional column (weekday, slot size) is missing on some rows."""
        smoke = self.smoke_request()
        row = {"campaign_id": smoke["campaign_id"], **smoke["state"], **smoke["request"]}
        return pd.DataFrame(
            [{key: float(value) if type(value) is int else value for key, value in row.items()}]
        )


def _mapping(request: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = request.get(name)
    if not isinstance(value, Mapping):
        raise ValueError(f"{name}: expected an object, got {value!r}")
    return value


def _number(
    values: Mapping[str, Any],
    name: str,
    where: str,
    *,
    low: float | None = None,
    high: float | None = None,
    default: float | None = None,
) -> float:
    value = values.get(name)
    if value is None:
        if default is None:
            raise ValueError(f"{where}.{name}: missing")
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{where}.{name}: expected a finite number, got {value!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f"[{low if low is not None else '-inf'}, {high if high is not None else 'inf'}]"
        raise ValueError(f"{where}.{name}: {value!r} is outside {bounds}")
    return float(value)


def _online_value(online: Mapping[str, Any] | None, name: str) -> float:
    if not online or name not in online:
        return math.nan
    value = online[name]
    if isinstance(value, list | tuple):
        value = value[0] if value else None
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else math.nan


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


# ---------------------------------------------------------------------------------------------
# the family


@dataclass(frozen=True)
class BidderFamily:
    names = BIDDER
    name = BIDDER.name
    registered_model = BIDDER.registered_model
    config_name = BIDDER.config_name
    feature_service = BIDDER.feature_service
    config_model: type[BidderConfig] = BidderConfig
    higher_is_better: bool = True

    @staticmethod
    def live_check(settings: Settings, champion: Any, config: Any) -> Any:
        from training.monitoring.live import check_bidder

        return check_bidder(settings, champion, config)

    def training_set(self, settings: Settings, config: BidderConfig) -> TrainingSet:
        return training_set(settings, config)

    def fit(
        self,
        training_set: TrainingSet,
        config: BidderConfig,
        params: Mapping[str, Any],
        report: Reporter | None,
    ) -> TrainedModel:
        return fit(training_set, config, params, report)

    def evaluate(self, trained: TrainedModel, training_set: TrainingSet, config: BidderConfig) -> Evaluation:
        return evaluate(trained, training_set, config)

    def default_params(self, config: BidderConfig) -> dict[str, Any]:
        return {}

    def compare_on_holdout(
        self,
        champion: BidderModel,
        challenger: BidderModel,
        challenger_params: Mapping[str, Any],
        training_set: TrainingSet,
        config: BidderConfig,
    ) -> HoldoutComparison:
        """% of the hindsight optimum of both served DQN policies on the challenger's held-out days."""
        return compare_served_models(champion, challenger, training_set.data, config)

    def search_space(self, trial: optuna.Trial, config: BidderConfig) -> dict[str, Any]:
        return search_space(trial, config)


def fit(
    training_set: TrainingSet, config: BidderConfig, params: Mapping[str, Any], report: Reporter | None
) -> TrainedModel:
    from models.bidding.dqn import train_dqn

    data: BiddingData = training_set.data
    click_model = ClickModel(
        None, click_model_config(config, params), extra_numeric=(*data.context_features, KNOWN_USER)
    )
    click_model.fit(data.requests.filter("click_train"))
    days = campaign_days(data, click_model.predict(bidder_rows(data)))
    served: dict[str, ServedCampaign] = {}
    pooled: list[AuctionDay] = []
    for campaign_id, info in data.campaigns.items():
        train_days = days[campaign_id].train
        served[campaign_id] = ServedCampaign(
            campaign_id=campaign_id,
            market_id=info.market_id,
            currency=info.currency,
            to_target=info.to_target,
            reference_spend=float(np.mean([unconstrained_spend(day) for day in train_days])),
            prior=LambdaPrior.fit(train_days),
            example_budget=info.daily_budget,
        )
        # one agent for every campaign: prices in units of the campaign's median price
        scale = price_scale(train_days)
        pooled.extend(scaled_day(day, 1 / scale) for day in train_days)
    agent_config = dqn_config(config, params)
    result = train_dqn(pooled, LambdaPrior.fit(pooled), agent_config, on_validation=report)
    weights = {name: tensor.detach().cpu().numpy().copy() for name, tensor in result.weights.items()}
    model = BidderModel(
        click_model,
        served,
        weights,
        agent_config.lambda_factors,
        agent_config.n_steps,
        data.currency,
        result.curve,
        agent_config.pacing_gain,
    )
    example = model.flat_example()
    return TrainedModel(
        python_model=model,
        input_example=example,
        output_example=model.predict(None, example),
        extra_requirements=pinned_requirements(SERVED_PACKAGES),
        learning_curve={
            "dqn_training_return": list(result.curve.training_returns),
            "dqn_validation_return": list(result.curve.validation_returns),
        },
        # greedy return on episodes generated from the training days, never the held-out days
        validation_score=float(result.best_validation_return),
    )


def policy_factories(
    model: BidderModel,
    days: Mapping[str, CampaignDays],
    auction_type: AuctionType,
    grid_size: int = 60,
) -> dict[str, Any]:
    """Each bidder per (budget fraction, campaign), tuned on that campaign's training days."""
    from models.bidding.baselines import (
        ConstantBid,
        FixedLambda,
        LinearBid,
        PIDPacing,
        reference_bid_value,
        tune_constant_bid,
        tune_linear_base_bid,
    )
    from models.bidding.dqn import DQNBidPolicy, DQNConfig

    n_steps = model.n_steps
    agent = DQNConfig(
        n_steps=n_steps,
        lambda_factors=model.lambda_factors,
        action_mode="absolute",
        pacing_gain=model.pacing_gain,
    )

    def prior(fraction: float, campaign: str) -> float:
        return model.campaigns[campaign].prior(fraction)

    return {
        "constant": lambda f, c: ConstantBid(
            tune_constant_bid(days[c].train, f, auction_type, grid_size), n_steps
        ),
        "linear": lambda f, c: LinearBid(
            tune_linear_base_bid(days[c].train, f, auction_type, grid_size),
            reference_bid_value(days[c].train),
            n_steps,
        ),
        "fixed_lambda": lambda f, c: FixedLambda(prior(f, c), n_steps),
        "pid": lambda f, c: PIDPacing(prior(f, c), n_steps=n_steps),
        DQN_POLICY: lambda f, c: (
            DQNBidPolicy(model.actor_weights, prior(f, c), agent)  # type: ignore[arg-type]
            if c in model.campaigns
            else ConstantBid(0.0, n_steps)  # serving refuses a campaign the model does not know
        ),
    }


def evaluate_policies(
    model: BidderModel,
    data: BiddingData,
    config: BidderConfig,
    source: str = "synthetic",
    *,
    policies: Sequence[str] | None = None,
    test_credit: np.ndarray | None = None,
) -> BiddingEvaluation:
    """Every bidder (or only `policies`) on the held-out days of every campaign
    (training.evaluation.bidding), bidding with the model's own pCTR; `test_credit` replaces what
    won test impressions are credited with (see `campaign_days`)."""
    from training.evaluation.bidding import evaluate_bidding

    days = campaign_days(data, model.click_model.predict(bidder_rows(data)), test_credit)
    test_days, groups = [], []
    for campaign_id in sorted(days):
        for day in days[campaign_id].test:
            test_days.append(day)
            groups.append(campaign_id)
    factories = policy_factories(
        model, days, config.evaluation.auction_type, config.evaluation.tuning_grid_size
    )
    if policies is not None:
        factories = {name: factories[name] for name in policies}
    return evaluate_bidding(
        source,
        test_days,
        factories,
        budget_fractions=config.evaluation.budget_fractions,
        auction_type=config.evaluation.auction_type,
        day_groups=groups,
        replay=config.evaluation.replay,
    )


def compare_served_models(
    champion: BidderModel, challenger: BidderModel, data: BiddingData, config: BidderConfig
) -> HoldoutComparison:
    """The serving champion and a challenger, as loaded from the registry, on `data`'s held-out days.

    Each model's DQN policy bids with its own click model (as it would serve) through the shared
    replay on the same requests, prices and budgets (evaluation.budget_fractions of each day's
    unconstrained spend); won impressions are credited alike for both: with the simulator's true
    click probability when known, else with the mean of the two models' pCTRs (neither model's own
    estimate then decides what a click was). Score: the % of the hindsight optimum (the same optimum
    for both), averaged over the budget fractions, as `evaluate`'s primary metric. A campaign a
    model does not know gets no bids from it: serving refuses it."""
    rows = bidder_rows(data)
    is_test = (rows["role"] == "test").to_numpy()
    if not is_test.any():
        raise ValueError("the bidding training set has no held-out (role 'test') requests to compare on")
    pctr = {
        "champion": champion.click_model.predict(rows),
        "challenger": challenger.click_model.predict(rows),
    }
    shared = (pctr["champion"] + pctr["challenger"]) / 2.0
    truth = rows["credit"].to_numpy().astype(np.float64)  # NaN where the truth is not known
    credit = np.where(np.isnan(truth), shared, truth)
    evaluations = {
        role: evaluate_policies(model, data, config, policies=(DQN_POLICY,), test_credit=credit)
        for role, model in (("champion", champion), ("challenger", challenger))
    }
    details: dict[str, float] = {}
    for role, evaluation in evaluations.items():
        for fraction in evaluation.budget_fractions():
            row = evaluation.row(fraction, DQN_POLICY)
            key = f"f1_{round(1 / fraction)}"
            details[f"clicks.{key}.{role}"] = row.clicks
            details[f"spend_over_budget.{key}.{role}"] = row.spend / row.budget if row.budget > 0 else 0.0
    for role, model in (("champion", champion), ("challenger", challenger)):
        details[f"unknown_campaigns.{role}"] = float(sum(c not in model.campaigns for c in data.campaigns))
    test = rows.filter(is_test)
    days = test.select("campaign_id", "local_date").unique()
    credited = (
        "true click probability"
        if not np.isnan(truth[is_test]).any()
        else "two models' mean pCTR where the truth is unknown"
    )
    fractions = ", ".join(f"1/{round(1 / fraction)}" for fraction in config.evaluation.budget_fractions)
    holdout = (
        f"{days.height} held-out campaign-days ({days['campaign_id'].n_unique()} campaigns, "
        f"{test['local_date'].min()} to {test['local_date'].max()}), {test.height} requests, budgets "
        f"{fractions} of each day's unconstrained spend, clicks credited with the {credited}"
    )
    details.update(days=float(days.height), requests=float(test.height))
    champion_score, challenger_score = (
        evaluations[role].mean_pct_of_optimum(DQN_POLICY) for role in ("champion", "challenger")
    )
    return HoldoutComparison("pct_of_optimum", True, champion_score, challenger_score, holdout, details)


def click_metrics(model: BidderModel, data: BiddingData) -> dict[str, dict[str, float]]:
    """AUC, log loss and ECE of the click model on the held-out days' won impressions (clicks exist
    only for them), and of the simulator's true click probability on the same impressions when known."""
    from training.evaluation.bidding import click_model_metrics

    held_out = data.requests.filter((pl.col("role") == "test") & pl.col("won"))
    labels = held_out["click"].to_numpy()
    metrics = {"click_model": _finite(click_model_metrics(labels, model.click_model.predict(held_out)))}
    if data.credit_source == "truth" and held_out["credit"].null_count() == 0:
        metrics["true_click_model"] = _finite(click_model_metrics(labels, held_out["credit"].to_numpy()))
    return metrics


def evaluate(trained: TrainedModel, training_set: TrainingSet, config: BidderConfig) -> Evaluation:
    from training.evaluation.bidding import learning_curve_figure, pacing_figure

    model: BidderModel = trained.python_model  # type: ignore[assignment]
    data: BiddingData = training_set.data
    evaluation = evaluate_policies(model, data, config)
    metrics: dict[str, Any] = {
        key: value for key, value in evaluation.metrics().items() if math.isfinite(value)
    }
    metrics.update(click_metrics(model, data))
    for fraction in TIGHTEST_FRACTIONS:
        if fraction in evaluation.budget_fractions():
            uplift = evaluation.uplift_pct(DQN_POLICY, "linear", fraction)
            if math.isfinite(uplift):
                metrics[f"dqn_uplift_over_linear_pct.f1_{round(1 / fraction)}"] = uplift
    pacing_fraction = config.evaluation.pacing_budget_fraction
    if pacing_fraction not in evaluation.budget_fractions():
        pacing_fraction = evaluation.budget_fractions()[-1]
    busiest = int(np.argmax([run.requests for run in evaluation.runs[(pacing_fraction, DQN_POLICY)]]))
    figures = {
        f"pacing_f1_{round(1 / pacing_fraction)}": pacing_figure(
            evaluation, pacing_fraction, day_index=busiest
        ),
        "dqn_learning_curve": learning_curve_figure(model.curve),
    }
    table = pl.DataFrame([row.as_dict() for row in evaluation.rows])
    return Evaluation(
        metrics=metrics,
        primary_metric=f"mean_pct_of_optimum.{DQN_POLICY}",
        higher_is_better=True,
        figures=figures,
        tables={"bidding_evaluation": table},
    )


def _finite(metrics: Mapping[str, float]) -> dict[str, float]:
    """The metrics that are defined: AUC is not when the held-out impressions hold no click."""
    return {name: value for name, value in metrics.items() if math.isfinite(value)}


def search_space(trial: optuna.Trial, config: BidderConfig) -> dict[str, Any]:
    """DQN and pacing hyperparameters (the P controller's gain under the agent, the reach of its
    factors); the episodes stay at the config's count, and `report` hears every validation."""
    return {
        "learning_rate": trial.suggest_float("learning_rate", 2e-4, 3e-3, log=True),
        "hidden_size": trial.suggest_categorical("hidden_size", [32, 64, 128]),
        "n_step": trial.suggest_categorical("n_step", [4, 8, 16]),
        "exploration_fraction": trial.suggest_float("exploration_fraction", 0.3, 0.8),
        "updates_per_episode": trial.suggest_int("updates_per_episode", 4, 16),
        "lambda_range": trial.suggest_float("lambda_range", 0.3, 1.2),
        "pacing_gain": trial.suggest_float("pacing_gain", 0.0, 8.0),
    }


FAMILY = BidderFamily()
