"""Auction rules and the hard budget guard, shared by the environment, the replay and the tuning.

A bid wins when it is strictly above the price to beat, max(market price, floor). The winner pays
the price to beat in a second-price auction and its own bid in a first-price auction.

The guard: a bid is cut to the budget still left before it is placed, so no single auction can cost
more than what remains and the day's spend never exceeds the budget, whatever the pCTR or the rule.
"""

from __future__ import annotations

import math
from enum import StrEnum

import numpy as np


class AuctionType(StrEnum):
    SECOND_PRICE = "second_price"
    FIRST_PRICE = "first_price"


def guard_bid(bid: float, remaining_budget: float) -> float:
    """The bid cut to [0, remaining budget]; a NaN or negative bid becomes 0 (no bid)."""
    if not bid > 0 or remaining_budget <= 0:  # `not bid > 0` also catches NaN
        return 0.0
    return min(bid, remaining_budget)


def auction_cost(bid: float, price_to_beat: float, auction_type: AuctionType) -> float:
    """What one (already guarded) bid pays: 0 when it loses."""
    if not bid > price_to_beat:
        return 0.0
    return price_to_beat if auction_type is AuctionType.SECOND_PRICE else bid


def resolve_auctions(
    bids: np.ndarray,
    price_to_beat: np.ndarray,
    remaining_budget: float,
    auction_type: AuctionType,
) -> tuple[np.ndarray, np.ndarray]:
    """Run a sequence of auctions in order under the guard; returns (won, cost) per auction.

    Exactly equal to guarding and resolving one auction at a time, but vectorised up to the first
    auction where the guard cuts a bid (usually the end of the budget), and sequential after it.
    """
    # no bid can exceed the whole remaining budget: cutting to it first keeps every sum finite
    bids = np.asarray(bids, dtype=np.float64)
    bids = np.minimum(np.where(bids > 0, bids, 0.0), max(remaining_budget, 0.0))  # NaN > 0 is False: no bid
    won = bids > price_to_beat
    cost = np.where(won, price_to_beat if auction_type is AuctionType.SECOND_PRICE else bids, 0.0)
    spent_before = np.concatenate([[0.0], np.cumsum(cost)[:-1]])
    guard_binds = bids > remaining_budget - spent_before
    if not guard_binds.any():
        return won, cost
    first = int(np.argmax(guard_binds))
    remaining = remaining_budget - float(cost[:first].sum())
    tail_bids = bids[first:].tolist()
    tail_prices = price_to_beat[first:].tolist()
    # once what is left cannot beat any later price, no later auction can be won: stop there
    later_min_price = np.minimum.accumulate(price_to_beat[first:][::-1])[::-1].tolist()
    won[first:] = False
    cost[first:] = 0.0
    for offset, (bid, price) in enumerate(zip(tail_bids, tail_prices, strict=True)):
        if remaining <= later_min_price[offset]:
            break
        guarded = guard_bid(bid, remaining)
        paid = auction_cost(guarded, price, auction_type)
        won[first + offset] = guarded > price
        cost[first + offset] = paid
        remaining -= paid
    return won, cost


def is_within_budget(spend: float, budget: float) -> bool:
    """Spend within the budget up to floating-point rounding of the running sum."""
    return spend <= budget or math.isclose(spend, budget, rel_tol=1e-12, abs_tol=0.0)
