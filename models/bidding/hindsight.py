"""The hindsight optimum of a day: the best set of auctions to win within the budget, knowing everything.

Why it bounds every policy (second price). Whatever a policy does, it ends the day having won some
set S of requests. In a second-price auction a won request i costs exactly its price to beat
c_i = max(market price, floor), whatever was bid, so S respects sum_{i in S} c_i <= budget and earns
sum_{i in S} v_i (v_i = credited click probability x value). S is therefore a feasible solution of
the 0/1 knapsack "maximise sum v_i x_i subject to sum c_i x_i <= B", so no policy earns more than its
integral optimum, and that is at most the optimum of the LP relaxation (0 <= x_i <= 1). The LP is a
fractional knapsack, solved exactly by taking requests in decreasing v_i / c_i and a fraction of the
first one that no longer fits (Dantzig 1957). In a first-price auction a won request costs the bid,
which is above c_i, so the same bound holds with room to spare.

The LP solution is also what a linear bidder does: bidding v_i / lambda wins request i exactly when
v_i / c_i > lambda, so the LP's threshold ratio is the lambda that spends the budget in hindsight.

The integral greedy solution (take requests in ratio order, skipping those that do not fit, and keep
the best single request if that is worth more) is feasible, so it lies between the best any policy
can do and the LP bound; with thousands of small requests the three are within a request's value.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.bidding.days import AuctionDay


@dataclass(frozen=True, eq=False)
class HindsightOptimum:
    lp_value: float  # fractional knapsack bound: no policy earns more
    greedy_value: float  # a feasible integral solution
    greedy_spend: float
    greedy_won: np.ndarray  # bool per request of the greedy solution
    threshold_ratio: float  # value/cost ratio of the marginal request; inf when everything fits


def _ratio_order(values: np.ndarray, costs: np.ndarray) -> np.ndarray:
    # free requests first (infinite ratio), ties broken by request order for determinism
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = np.where(costs > 0, values / np.where(costs > 0, costs, 1.0), np.inf)
    return np.lexsort((np.arange(len(values)), -ratios))


@dataclass(frozen=True)
class _LPSolution:
    value: float
    threshold_ratio: float
    order: np.ndarray  # useful requests in decreasing value/cost
    n_full: int  # how many of them fit entirely
    spent_on_full: float


def _solve_lp(values: np.ndarray, costs: np.ndarray, budget: float) -> _LPSolution:
    order = _ratio_order(values, costs)
    order = order[values[order] > 0]
    ordered_costs = costs[order]
    ordered_values = values[order]
    cumulative_cost = np.cumsum(ordered_costs)
    n_full = int(np.searchsorted(cumulative_cost, budget, side="right"))
    spent = float(cumulative_cost[n_full - 1]) if n_full else 0.0
    value = float(ordered_values[:n_full].sum())
    threshold = np.inf
    if n_full < len(order):
        marginal_cost = float(ordered_costs[n_full])
        value += float(ordered_values[n_full]) * (budget - spent) / marginal_cost
        threshold = float(ordered_values[n_full]) / marginal_cost
    return _LPSolution(value, threshold, order, n_full, spent)


def lp_bound(values: np.ndarray, costs: np.ndarray, budget: float) -> float:
    """The fractional knapsack bound alone (what the environment's rewards are scaled by)."""
    return _solve_lp(values, costs, budget).value


def knapsack_optimum(values: np.ndarray, costs: np.ndarray, budget: float) -> HindsightOptimum:
    """The LP bound and the greedy integral solution for non-negative values and costs."""
    lp = _solve_lp(values, costs, budget)
    order, n_full = lp.order, lp.n_full
    useful = values > 0
    greedy_won = np.zeros(len(values), dtype=bool)
    greedy_won[order[:n_full]] = True
    remaining = budget - lp.spent_on_full
    tail = order[n_full:]
    for index, cost in zip(tail.tolist(), costs[tail].tolist(), strict=True):
        if cost <= remaining:
            greedy_won[index] = True
            remaining -= cost
    greedy_value = float(values[greedy_won].sum())
    affordable = useful & (costs <= budget)
    if affordable.any() and values[affordable].max() > greedy_value:
        best_single = int(np.flatnonzero(affordable)[np.argmax(values[affordable])])
        greedy_won = np.zeros(len(values), dtype=bool)
        greedy_won[best_single] = True
        greedy_value = float(values[best_single])
    return HindsightOptimum(
        lp_value=lp.value,
        greedy_value=greedy_value,
        greedy_spend=float(costs[greedy_won].sum()),
        greedy_won=greedy_won,
        threshold_ratio=lp.threshold_ratio,
    )


def hindsight_optimum(day: AuctionDay, budget: float) -> HindsightOptimum:
    """The best set of the day's auctions to win within the budget, credited with the day's clicks."""
    return knapsack_optimum(day.credited_value, day.price_to_beat, budget)


def hindsight_lambda(day: AuctionDay, budget: float) -> float:
    """The lambda with which bidding pCTR x value / lambda spends the budget on this day, in hindsight.

    Computed from the bidder's own values (pCTR, not the credited clicks), so it is what a bidder
    could learn from its logs. When even winning everything fits the budget it is the smallest
    positive ratio of the day (bid enough to win everything).
    """
    threshold = _solve_lp(day.bid_value, day.price_to_beat, budget).threshold_ratio
    if np.isfinite(threshold) and threshold > 0:
        return threshold
    costs = day.price_to_beat
    priced = (costs > 0) & (day.bid_value > 0)
    if not priced.any():
        return 1.0
    # a little below the smallest ratio, so that every priced request is won
    return float((day.bid_value[priced] / costs[priced]).min()) * 0.999
