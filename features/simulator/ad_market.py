"""Shapes of a real ad market, fitted once from the iPinYou sample and written down here.

Source: /work/shared/data/ipinyou-2259/train.log.txt (iPinYou RTB data set, season 3, advertiser
2259, 1% sample, 8,355 won impressions from 2013-10-19 to 2013-10-22; Zhang et al.,
arXiv:1407.7073). The generator never reads that file; these constants are what a one-off fit gave.

The fit: ordinary least squares of log(payprice) on dummies for hour (local Beijing time), ad
exchange and slot size, with hour 0, exchange 1 and 300x250 as the reference; the residual standard
deviation per exchange is the log-normal sigma. Two caveats, both documented where used:
- payprice is only seen for won impressions, whose bids were 277 or 294 fen, so the upper tail is
  cut off and the sigmas are slight underestimates;
- the advertiser paused delivery from 20:00 to 23:59 every day, so hours 20-23 have no data; their
  price offsets and traffic are interpolated linearly between hour 19 and hour 0.
The hourly impression counts of the sample give the shape of the request traffic over the day.
"""

from __future__ import annotations

from dataclasses import dataclass

# log(payprice in fen CPM) at hour 0, exchange 1, slot 300x250
LOG_PRICE_INTERCEPT = 4.22
# USD per CNY in October 2013 (about 6.12 CNY per dollar): turns fen CPM into US-dollar CPM
USD_PER_CNY_2013 = 0.1634

_FITTED_HOUR_OFFSETS = (
    0.00, -0.04, -0.24, -0.09, -0.13, -0.10, 0.02, 0.21, 0.17, 0.11,
    0.38, 0.36, 0.39, 0.32, 0.23, 0.15, 0.26, 0.31, 0.24, 0.19,
)  # fmt: skip
_FITTED_HOUR_IMPRESSIONS = (
    592, 311, 235, 296, 200, 191, 164, 206, 339, 557,
    582, 544, 542, 593, 631, 651, 625, 543, 311, 242,
)  # fmt: skip


def _close_the_day(fitted: tuple[float, ...]) -> tuple[float, ...]:
    """Hours 20-23 interpolated linearly from hour 19 back to hour 0 (no data there, see above)."""
    last, first = fitted[19], fitted[0]
    return fitted + tuple(last + (first - last) * step / 5 for step in range(1, 5))


# log-price offset per local hour of day (0-23)
HOUR_LOG_PRICE_OFFSETS = _close_the_day(_FITTED_HOUR_OFFSETS)
# relative request traffic per local hour of day (0-23), sums to 1
_hour_traffic = _close_the_day(tuple(float(count) for count in _FITTED_HOUR_IMPRESSIONS))
HOUR_TRAFFIC = tuple(value / sum(_hour_traffic) for value in _hour_traffic)


@dataclass(frozen=True)
class Exchange:
    name: str
    share: float  # share of impressions in the sample
    log_price_offset: float
    log_price_sigma: float  # residual sd of log(payprice)
    floor_share_zero: float  # share of slots without a reserve price
    floor_log_mean: float  # log-normal reserve price (fen CPM) of the other slots
    floor_log_sigma: float


# iPinYou numbers its exchanges 1-3 without naming them
EXCHANGES: tuple[Exchange, ...] = (
    Exchange("adx1", 0.360, 0.00, 1.02, 1.0, 0.00, 0.00),
    Exchange("adx2", 0.344, -0.16, 1.05, 0.0, 2.37, 1.27),
    Exchange("adx3", 0.296, -0.06, 0.80, 0.0, 3.71, 0.61),
)


@dataclass(frozen=True)
class SlotSize:
    width: int
    height: int
    share: float  # share of impressions among these nine sizes (94% of the sample; the rest are rare sizes)
    log_price_offset: float

    @property
    def label(self) -> str:
        return f"{self.width}x{self.height}"


SLOT_SIZES: tuple[SlotSize, ...] = (
    SlotSize(300, 250, 0.383, 0.00),
    SlotSize(1000, 90, 0.160, 0.13),
    SlotSize(728, 90, 0.151, -0.18),
    SlotSize(250, 250, 0.096, -0.65),
    SlotSize(336, 280, 0.068, -0.57),
    SlotSize(950, 90, 0.051, -1.16),
    SlotSize(200, 200, 0.042, -0.54),
    SlotSize(468, 60, 0.030, -0.44),
    SlotSize(160, 600, 0.019, 0.05),
)

EXCHANGE_NAMES = tuple(exchange.name for exchange in EXCHANGES)
SLOT_LABELS = tuple(size.label for size in SLOT_SIZES)
