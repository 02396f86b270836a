"""Evaluation of bidders on held-out days, against each other and the hindsight optimum.

Protocol: every policy is replayed request by request through the server's interface
(`BidPolicy.bid` / `update`, `models.bidding.replay.replay_requests`; or, faster and with the same
result, step by step with `replay="steps"`) on each held-out day at budgets
of 1/2, 1/4, 1/8 and 1/16 of that day's unconstrained spend: the spend of a constant bid above every
price of the day, which wins every auction and pays each one's price to beat, max(market price,
floor) (`models.bidding.days.unconstrained_spend`). Policies are built per budget fraction by
factories, so tuned baselines can use the fraction their training days were tuned at.

Per (budget fraction, policy), summed over the days: clicks and value credited to won impressions
(expected clicks of the known click model, or sampled clicks), spend and budget, win rate (wins /
requests), CPC (spend / clicks), and pct_of_optimum = 100 x value / the sum of the days' hindsight LP
bounds (`models.bidding.hindsight`: no policy can exceed it). The integral hindsight solution is
reported as the policy `hindsight_optimum`.

Also here: the click model's metrics (AUC, log loss, expected calibration error) and the pacing and
learning-curve figures (returned; the caller logs them).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Literal

import numpy as np
from matplotlib.figure import Figure
from sklearn.metrics import log_loss, roc_auc_score

from models.bidding.auction import AuctionType
from models.bidding.days import AuctionDay, budget_for
from models.bidding.hindsight import hindsight_optimum
from models.bidding.learning_curve import LearningCurve
from models.bidding.policy import BidPolicy
from models.bidding.replay import DayRun, replay_requests, replay_steps
from training.evaluation.intervals import Interval

BUDGET_FRACTIONS: tuple[float, ...] = (1 / 2, 1 / 4, 1 / 8, 1 / 16)
OPTIMUM_POLICY = "hindsight_optimum"
ROW_KEYS = (
    "source",
    "budget_fraction",
    "policy",
    "clicks",
    "value",
    "pct_of_optimum",
    "spend",
    "budget",
    "win_rate",
    "cpc",
)

# a budget fraction -> the policy to run at that budget
PolicyFactory = Callable[[float], BidPolicy]
# (budget fraction, group of the day: its campaign, say) -> the policy to run on that group's days
GroupPolicyFactory = Callable[[float, str], BidPolicy]


# ---------------------------------------------------------------------------------------------
# click model metrics


def expected_calibration_error(labels: np.ndarray, probabilities: np.ndarray, n_bins: int = 10) -> float:
    """ECE with equal-count bins: sum over bins of (bin share) x |observed rate - mean prediction|.

    Equal-count rather than equal-width bins because click rates sit far below 0.1: equal-width bins
    would put almost every impression in the first bin and hide any miscalibration.
    """
    labels = np.asarray(labels, dtype=np.float64)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    order = np.argsort(probabilities, kind="stable")
    error = 0.0
    for bin_rows in np.array_split(order, n_bins):
        if len(bin_rows):
            gap = abs(labels[bin_rows].mean() - probabilities[bin_rows].mean())
            error += len(bin_rows) / len(labels) * gap
    return float(error)


def click_model_metrics(labels: np.ndarray, probabilities: np.ndarray) -> dict[str, float]:
    """AUC, log loss and ECE of predicted probabilities against 0/1 labels, with the two rates."""
    labels = np.asarray(labels, dtype=np.int64)
    probabilities = np.clip(np.asarray(probabilities, dtype=np.float64), 1e-7, 1 - 1e-7)
    return {
        "auc": float(roc_auc_score(labels, probabilities)),
        "log_loss": float(log_loss(labels, probabilities, labels=[0, 1])),
        "ece": expected_calibration_error(labels, probabilities),
        "mean_prediction": float(probabilities.mean()),
        "observed_rate": float(labels.mean()),
    }


# ---------------------------------------------------------------------------------------------
# bidding evaluation


@dataclass(frozen=True)
class BiddingRow:
    source: str
    budget_fraction: float
    policy: str
    clicks: float
    value: float
    pct_of_optimum: float
    spend: float
    budget: float
    win_rate: float
    cpc: float

    def as_dict(self) -> dict[str, str | float]:
        return asdict(self)


@dataclass(frozen=True, eq=False)
class BiddingEvaluation:
    source: str
    rows: tuple[BiddingRow, ...]
    runs: Mapping[tuple[float, str], tuple[DayRun, ...]]  # (budget fraction, policy) -> one run per day
    # per budget fraction, one value per test day: the hindsight LP bound, and the value the
    # integral hindsight solution earned (the `hindsight_optimum` row's days)
    day_bounds: Mapping[float, tuple[float, ...]] = field(default_factory=dict)
    day_optimum_values: Mapping[float, tuple[float, ...]] = field(default_factory=dict)

    def day_values(self, budget_fraction: float, policy: str) -> tuple[np.ndarray, np.ndarray]:
        """Per test day: the value `policy` earned and the day's hindsight LP bound. A row's
        pct_of_optimum is 100 x the sum of the first over the sum of the second: these are its
        units for an interval over days."""
        bounds = np.asarray(self.day_bounds[budget_fraction], dtype=np.float64)
        if policy == OPTIMUM_POLICY:
            return np.asarray(self.day_optimum_values[budget_fraction], dtype=np.float64), bounds
        runs = self.runs[(budget_fraction, policy)]
        return np.array([run.value for run in runs], dtype=np.float64), bounds

    def row(self, budget_fraction: float, policy: str) -> BiddingRow:
        for row in self.rows:
            if row.policy == policy and row.budget_fraction == budget_fraction:
                return row
        raise KeyError(f"no row for policy {policy} at budget fraction {budget_fraction}")

    def policies(self) -> list[str]:
        return list(dict.fromkeys(row.policy for row in self.rows))

    def budget_fractions(self) -> list[float]:
        return list(dict.fromkeys(row.budget_fraction for row in self.rows))

    def mean_pct_of_optimum(self, policy: str) -> float:
        """pct_of_optimum averaged over the budget fractions."""
        return float(
            np.mean([self.row(fraction, policy).pct_of_optimum for fraction in self.budget_fractions()])
        )

    def uplift_pct(self, policy: str, baseline: str, budget_fraction: float) -> float:
        """How many percent more value `policy` earned than `baseline` at a budget fraction."""
        base = self.row(budget_fraction, baseline).value
        return float("nan") if base <= 0 else 100.0 * (self.row(budget_fraction, policy).value / base - 1.0)

    def metrics(self) -> dict[str, float]:
        """Flat metrics for a tracking run, e.g. `pct_of_optimum.f1_16.dqn`."""
        metrics: dict[str, float] = {}
        for row in self.rows:
            key = f"f1_{round(1 / row.budget_fraction)}.{row.policy}"
            metrics[f"pct_of_optimum.{key}"] = row.pct_of_optimum
            metrics[f"spend_over_budget.{key}"] = row.spend / row.budget if row.budget > 0 else float("nan")
            metrics[f"win_rate.{key}"] = row.win_rate
            metrics[f"cpc.{key}"] = row.cpc
        for policy in self.policies():
            metrics[f"mean_pct_of_optimum.{policy}"] = self.mean_pct_of_optimum(policy)
        return metrics


def evaluate_bidding(
    source: str,
    test_days: Sequence[AuctionDay],
    policies: Mapping[str, PolicyFactory] | Mapping[str, GroupPolicyFactory],
    budget_fractions: Sequence[float] = BUDGET_FRACTIONS,
    auction_type: AuctionType = AuctionType.SECOND_PRICE,
    day_groups: Sequence[str] | None = None,
    replay: Literal["requests", "steps"] = "requests",
) -> BiddingEvaluation:
    """Every policy on every held-out day at every budget fraction, plus the hindsight optimum.

    With `day_groups` (one label per test day, e.g. its campaign), each factory is called with
    (fraction, group) and its policy runs on that group's days: policies tuned per campaign, summed
    into one row per (fraction, policy) like the days of a single source.

    `replay="steps"` resolves each time step's auctions at once (`replay_steps`): the same result
    for every policy here (tests/models/test_bidding.py holds the two equal), many times faster.
    """
    if day_groups is not None and len(day_groups) != len(test_days):
        raise ValueError(f"day_groups has {len(day_groups)} labels for {len(test_days)} test days")
    rows: list[BiddingRow] = []
    runs: dict[tuple[float, str], tuple[DayRun, ...]] = {}
    day_bounds: dict[float, tuple[float, ...]] = {}
    day_optimum_values: dict[float, tuple[float, ...]] = {}
    for fraction in budget_fractions:
        budgets = [budget_for(day, fraction) for day in test_days]
        optima = [hindsight_optimum(day, budget) for day, budget in zip(test_days, budgets, strict=True)]
        optimum_value = sum(optimum.lp_value for optimum in optima)
        day_bounds[fraction] = tuple(float(optimum.lp_value) for optimum in optima)
        day_optimum_values[fraction] = tuple(float(optimum.greedy_value) for optimum in optima)
        for name, make_policy in policies.items():
            if day_groups is None:
                day_policies = [make_policy(fraction)] * len(test_days)  # type: ignore[call-arg]
            else:
                by_group = {group: make_policy(fraction, group) for group in dict.fromkeys(day_groups)}  # type: ignore[call-arg]
                day_policies = [by_group[group] for group in day_groups]
            replay_day = replay_requests if replay == "requests" else replay_steps
            day_runs = tuple(
                replay_day(policy, day, budget, auction_type)
                for policy, day, budget in zip(day_policies, test_days, budgets, strict=True)
            )
            runs[(fraction, name)] = day_runs
            rows.append(_row(source, fraction, name, day_runs, optimum_value))
        clicks = sum(
            float(day.click_prob[o.greedy_won].sum()) for day, o in zip(test_days, optima, strict=True)
        )
        greedy_value = sum(optimum.greedy_value for optimum in optima)
        greedy_spend = sum(optimum.greedy_spend for optimum in optima)
        wins = sum(int(optimum.greedy_won.sum()) for optimum in optima)
        rows.append(
            _summary_row(
                source,
                fraction,
                OPTIMUM_POLICY,
                optimum_value,
                clicks=clicks,
                value=greedy_value,
                spend=greedy_spend,
                budget=sum(budgets),
                wins=wins,
                requests=sum(day.n_requests for day in test_days),
            )
        )
    return BiddingEvaluation(
        source=source,
        rows=tuple(rows),
        runs=runs,
        day_bounds=day_bounds,
        day_optimum_values=day_optimum_values,
    )


def _row(
    source: str, fraction: float, policy: str, runs: Sequence[DayRun], optimum_value: float
) -> BiddingRow:
    return _summary_row(
        source,
        fraction,
        policy,
        optimum_value,
        clicks=sum(run.clicks for run in runs),
        value=sum(run.value for run in runs),
        spend=sum(run.spend for run in runs),
        budget=sum(run.budget for run in runs),
        wins=sum(run.wins for run in runs),
        requests=sum(run.requests for run in runs),
    )


def _summary_row(
    source: str,
    fraction: float,
    policy: str,
    optimum_value: float,
    *,
    clicks: float,
    value: float,
    spend: float,
    budget: float,
    wins: int,
    requests: int,
) -> BiddingRow:
    """One table row from totals over the test days: the ratios are computed here only."""
    return BiddingRow(
        source=source,
        budget_fraction=fraction,
        policy=policy,
        clicks=clicks,
        value=value,
        pct_of_optimum=100.0 * value / optimum_value if optimum_value > 0 else float("nan"),
        spend=spend,
        budget=budget,
        win_rate=wins / max(1, requests),
        cpc=spend / clicks if clicks > 0 else float("nan"),
    )


def format_table(rows: Sequence[BiddingRow], intervals: Sequence[Interval] | None = None) -> str:
    """The rows as an aligned text table with the columns of `ROW_KEYS`; with `intervals` (one per
    row), two more: the days behind each row and pct_of_optimum's 95% interval."""
    keys = [*ROW_KEYS, *(["n", "pct 95% CI"] if intervals is not None else [])]
    cells = [keys]
    for index, row in enumerate(rows):
        line = [
            row.source,
            f"1/{round(1 / row.budget_fraction)}",
            row.policy,
            f"{row.clicks:.4g}",
            f"{row.value:.4g}",
            f"{row.pct_of_optimum:.1f}",
            f"{row.spend:.4g}",
            f"{row.budget:.4g}",
            f"{row.win_rate:.3f}",
            f"{row.cpc:.4g}",
        ]
        if intervals is not None:
            interval = intervals[index]
            line += [str(interval.n), f"[{interval.low:.1f}, {interval.high:.1f}]"]
        cells.append(line)
    widths = [max(len(line[column]) for line in cells) for column in range(len(keys))]
    return "\n".join(
        "  ".join(cell.rjust(width) for cell, width in zip(line, widths, strict=True)) for line in cells
    )


# ---------------------------------------------------------------------------------------------
# figures


def pacing_figure(evaluation: BiddingEvaluation, budget_fraction: float, day_index: int = 0) -> Figure:
    """Cumulative spend over one held-out day per policy, as a share of the budget, against the ideal
    linear spend (budget x elapsed share of the day)."""
    # a bare Figure, not pyplot: no global figure registry to leak from, no GUI backend needed
    figure = Figure(figsize=(7, 4.5))
    axes = figure.subplots()
    date = None
    for policy in evaluation.policies():
        if policy == OPTIMUM_POLICY:
            continue
        run = evaluation.runs[(budget_fraction, policy)][day_index]
        date = run.date
        steps = len(run.spend_curve)
        hours = 24 * np.arange(steps + 1) / steps
        axes.step(hours, np.concatenate([[0.0], run.spend_curve]) / run.budget, where="post", label=policy)
    axes.plot([0, 24], [0, 1], "k--", linewidth=1, label="ideal (linear)")
    axes.set(
        xlabel="market-local time of day (h; a daylight-saving day is scaled to 24)",
        ylabel="spend / budget",
        xlim=(0, 24),
        ylim=(0, 1.05),
        title=f"{evaluation.source} {date}: pacing at 1/{round(1 / budget_fraction)} of unconstrained spend",
    )
    axes.legend(loc="upper left", fontsize="small")
    figure.tight_layout()
    return figure


def learning_curve_figure(curve: LearningCurve, smoothing_episodes: int = 50) -> Figure:
    """Training returns (with exploration, moving average) and greedy validation returns per episode."""
    figure = Figure(figsize=(7, 4.5))
    axes = figure.subplots()
    returns = np.asarray(curve.training_returns)
    if len(returns):
        window = max(1, min(smoothing_episodes, len(returns)))
        smoothed = np.convolve(returns, np.ones(window) / window, mode="valid")
        axes.plot(
            np.arange(window, len(returns) + 1), smoothed, label=f"training (mean of {window})", alpha=0.7
        )
    axes.plot(curve.validation_episodes, curve.validation_returns, "o-", label="validation, greedy")
    axes.axhline(
        curve.fixed_lambda_return, color="k", linestyle="--", linewidth=1, label="fixed starting lambda"
    )
    axes.set(xlabel="training episodes", ylabel="return: % of hindsight optimum", title="DQN learning curve")
    axes.legend(loc="lower right", fontsize="small")
    figure.tight_layout()
    return figure
