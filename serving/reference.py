"""Reference data that is the same for every request, cached per replica.

Markets (time zones) and campaigns (market, daily budget) come from the contract tables; a replica
reads them once and a background task re-reads them every `reference_refresh_s`, so a request
never touches the disk for them. A refresh that fails keeps the last good copy.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from configs.settings import Settings

logger = logging.getLogger(__name__)
_ONE_DAY = timedelta(days=1)


@dataclass(frozen=True)
class Campaign:
    campaign_id: str
    market_id: str
    daily_budget: float
    timezone: ZoneInfo


@dataclass(frozen=True)
class ReferenceData:
    markets: dict[str, ZoneInfo] = field(default_factory=dict)
    campaigns: dict[str, Campaign] = field(default_factory=dict)
    loaded_at: datetime | None = None
    error: str | None = None

    def campaign(self, campaign_id: str) -> Campaign:
        try:
            return self.campaigns[campaign_id]
        except KeyError:
            raise ValueError(
                f"campaign_id: unknown campaign {campaign_id!r} ({len(self.campaigns)} campaigns known)"
            ) from None


def load_reference_data(settings: Settings) -> ReferenceData:
    from features.tables import read_table

    markets_table = read_table(settings.contract_dir, "markets")
    markets = {
        row["market_id"]: ZoneInfo(row["timezone"])
        for row in markets_table.select("market_id", "timezone").to_dicts()
    }
    campaigns_table = read_table(settings.contract_dir, "campaigns")
    campaigns = {
        row["campaign_id"]: Campaign(
            row["campaign_id"], row["market_id"], float(row["daily_budget"]), markets[row["market_id"]]
        )
        for row in campaigns_table.select("campaign_id", "market_id", "daily_budget").to_dicts()
        if row["market_id"] in markets
    }
    return ReferenceData(markets, campaigns, datetime.now(UTC))


def refreshed(settings: Settings, current: ReferenceData) -> ReferenceData:
    """A new copy, or the current one with the error noted when the tables cannot be read."""
    try:
        return load_reference_data(settings)
    except Exception as error:  # a refresh must never take the replica down: keep the last copy
        logger.warning("reference data refresh failed, keeping the last copy: %s", error)
        return ReferenceData(
            current.markets, current.campaigns, current.loaded_at, f"{type(error).__name__}: {error}"
        )


def local_day(moment: datetime, timezone: ZoneInfo) -> tuple[str, float]:
    """The market-local date of `moment` and the fraction of that local day already gone."""
    local = moment.astimezone(timezone)
    midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
    # real elapsed time over the real length of the day, so DST days of 23 or 25 hours stay right
    start = midnight.astimezone(UTC)
    end = (midnight.replace(tzinfo=None) + _ONE_DAY).replace(tzinfo=timezone).astimezone(UTC)
    fraction = (moment.astimezone(UTC) - start) / (end - start)
    return local.date().isoformat(), min(max(fraction, 0.0), 1.0)
