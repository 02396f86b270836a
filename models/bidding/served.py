"""The served bidder: one campaign's bid for one request, from the state the server keeps.

pCTR from the request context through the click model's booster on one numpy row and its
calibration map (`click_scorer`), lambda from the campaign state through the Q-network's greedy
action in numpy (no torch at answer time), bid = pCTR / lambda in the campaign's currency per
impression, cut to the budget left (0 once spent). A plain class (no MLflow, no training import):
`tracking.pyfunc.ServedPyfunc` wraps it for the registry, and its `TabularForm` methods keep the
pyfunc's one flat row per request (campaign_id, the state's fields, the request's fields, online
`<view>__<feature>` columns) and its `bid`, `pctr`, `lambda` output columns.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from models.bidding.auction import guard_bid
from models.bidding.baselines import LambdaPrior
from models.bidding.click_model import ClickModel
from models.bidding.click_scorer import ClickScorer
from models.bidding.dqn import GreedyActor
from models.bidding.environment import paced_lambda
from models.bidding.learning_curve import LearningCurve
from models.bidding.policy import pacing_features, step_of
from models.served import Answer, OnlineValues, Request

KNOWN_USER = "known_user"  # 1 when the request comes from a recognised marketplace user
# the lambda prior's range: budgets below it bid as if at it
MIN_BUDGET_FRACTION = 1 / 128
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
ANSWER_FIELDS = ("bid", "pctr", "lambda")
# the request fields each categorical input is made of
CATEGORICAL_REQUEST_FIELDS = {
    "exchange": ("exchange",),
    "slot_id": ("slot",),
    "slot_size": ("slot_width", "slot_height"),
    "region": ("region",),
}
# the Feast views whose `<view>__<feature>` columns the click model reads online
ONLINE_VIEWS = ("campaign_stats__", "market_daily__")


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


class ServedBidder:
    """The registered bidder (`models.served.ServedModel` and `TabularForm`).

    Request: {"campaign_id", "state": {budget, spent, time_fraction, recent_win_rate, recent_cpc,
    recent_ctr}, "request": {hour (0-23, market-local), exchange, slot, region, floor_price (CPM, the
    campaign's currency), optional weekday (1 = Monday), slot_width, slot_height, known_user}}.
    Budget, spent and the bid are in the campaign's currency; the bid is per impression. Response:
    {"bid", "pctr", "lambda"} with bid = pCTR / lambda before the budget guard.
    """

    def __init__(
        self,
        click_model: ClickModel,
        campaigns: Mapping[str, ServedCampaign],
        actor_weights: Mapping[str, Any],
        lambda_factors: tuple[float, ...],
        n_steps: int,
        currency: str,
        curve: LearningCurve,
        pacing_gain: float = 0.0,
        feature_service: str | None = None,
    ) -> None:
        self.feature_service = feature_service
        self.click_model = click_model
        self.scorer = ClickScorer.of(click_model)
        self.required_fields = (
            "hour",
            "floor_price",
            *(name for column in self.scorer.codes for name in CATEGORICAL_REQUEST_FIELDS[column]),
        )
        self.campaigns = dict(campaigns)
        self.actor_weights = dict(actor_weights)
        self.actor = GreedyActor(self.actor_weights)
        self.lambda_factors = lambda_factors
        self.n_steps = n_steps
        self.currency = currency
        self.curve = curve
        self.pacing_gain = pacing_gain

    # -- the fast path ------------------------------------------------------------------------

    def answer(self, request: Request, online: OnlineValues | None = None) -> Answer:
        campaign = self.campaign(request.get("campaign_id"))
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

    def campaign(self, campaign_id: Any) -> ServedCampaign:
        """The served campaign of `campaign_id`; a ValueError naming the known ones otherwise."""
        if not isinstance(campaign_id, str):
            raise ValueError(f"campaign_id: expected a string, got {campaign_id!r}")
        campaign = self.campaigns.get(campaign_id)
        if campaign is None:
            known = ", ".join(sorted(self.campaigns)[:20])
            raise ValueError(f"campaign_id: unknown campaign {campaign_id!r} (known: {known})")
        return campaign

    def _features(
        self, campaign: ServedCampaign, context: Mapping[str, Any], online: OnlineValues | None
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
            if name.startswith(ONLINE_VIEWS):
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

    def online_entities(self, request: Request) -> list[dict[str, Any]] | None:
        campaign = self.campaign(request.get("campaign_id"))
        return [{"campaign_id": campaign.campaign_id, "market_id": campaign.market_id}]

    def smoke_request(self) -> Request:
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

    def describe(self) -> dict[str, Any]:
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

    # -- the MLflow table form (models.served.TabularForm) --------------------------------------

    def request_from_row(self, row: dict[str, Any]) -> tuple[Request, OnlineValues | None]:
        """One flat row: campaign_id, the state's fields, the request's fields, and optionally online
        feature columns (`<view>__<feature>`); missing cells are absent fields."""
        present = {key: value for key, value in row.items() if value is not None}
        request = {
            "campaign_id": present.get("campaign_id"),
            "state": {key: present[key] for key in STATE_FIELDS if key in present},
            "request": {key: present[key] for key in REQUEST_FIELDS if key in present},
        }
        online = {key: [value] for key, value in present.items() if "__" in key}
        return request, online or None

    def rows_from_answer(self, answer: Answer, index: int) -> list[dict[str, Any]]:
        return [{name: answer[name] for name in ANSWER_FIELDS}]

    def example_row(self) -> dict[str, Any]:
        """The smoke request as one flat row; whole numbers as floats, so the signature accepts a
        batch where an optional column (weekday, slot size) is missing on some rows."""
        smoke = self.smoke_request()
        row = {"campaign_id": smoke["campaign_id"], **smoke["state"], **smoke["request"]}
        return {key: float(value) if type(value) is int else value for key, value in row.items()}


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


def _online_value(online: OnlineValues | None, name: str) -> float:
    if not online or name not in online:
        return math.nan
    value: Any = online[name]
    if isinstance(value, list | tuple):
        value = value[0] if value else None
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else math.nan
