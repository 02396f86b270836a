"""What every family's live check returns and the helpers they share.

Each family's check lives with the family (`training/<name>/monitor.py`, `Family.live_check`):
it gets the champion as serving holds it (the plain served model of
`models:/tradewind-<name>@champion`) and its training run's metrics, and returns prediction drift
rows (PSI, see drift.py) and a `LiveAccuracy`; each module's docstring says what it compares.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import polars as pl

from configs.settings import Settings
from training.monitoring.drift import DriftRow, WindowSpan


@dataclass(frozen=True)
class Champion:
    """The serving champion: its version, its training run and the loaded PythonModel."""

    command: str
    version: int
    run_id: str | None
    trained_at: datetime | None  # the training run's start
    metrics: Mapping[str, float]
    model: Any
    family_config: Any


@dataclass(frozen=True)
class LiveAccuracy:
    """The champion's error on actuals that arrived after it was trained, beside its training figure."""

    metric: str  # e.g. "wape", "log_loss", "hitrate_at_10"
    higher_is_better: bool
    value: float | None
    training_metric: str  # the champion run's metric it is compared with
    training_value: float | None
    observations: int  # series-days, won impressions, users
    since: str  # what "since training" is, in words
    comparable: bool = True  # False when the live figure cannot be read against the training one yet
    details: Mapping[str, float] = field(default_factory=dict)
    per_day: tuple[tuple[str, float], ...] = ()
    note: str = ""

    @property
    def error_change(self) -> float | None:
        """How much worse than at training, relative (0.1: 10% worse; negative: better)."""
        if self.value is None or self.training_value is None or self.training_value == 0:
            return None
        change = (self.value - self.training_value) / abs(self.training_value)
        return -change if self.higher_is_better else change


@dataclass(frozen=True)
class ChampionCheck:
    predictions: list[DriftRow]
    live: LiveAccuracy
    span: WindowSpan | None = None


# ---------------------------------------------------------------------------------------------
# forecaster


def seen_until(settings: Settings, table: str, column: str, trained_at: datetime | None) -> datetime | None:
    """The newest `column` value in the contract partitions of `table` that were last ingested before
    `trained_at` (from `ingest_log.jsonl`): what the champion trained on. None when unknown."""
    from features.tables import partition_path

    log = settings.root / "ingest_log.jsonl"
    if trained_at is None or not log.exists():
        return None
    last_ingest: dict[str, datetime] = {}
    for line in log.read_text().splitlines():
        if not line.strip():
            continue
        entry = json.loads(line)
        if entry.get("table") != table:
            continue
        moment = datetime.fromisoformat(entry["ingested_at"])
        moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
        previous = last_ingest.get(entry["partition"])
        last_ingest[entry["partition"]] = moment if previous is None else max(previous, moment)
    paths = [
        path
        for partition, moment in last_ingest.items()
        if moment < trained_at and (path := partition_path(settings.contract_dir, table, partition)).exists()
    ]
    if not paths:
        return None
    return pl.scan_parquet(paths).select(pl.col(column).max()).collect().item()


def normalized_log_loss(loss: float | None, rate: float | None) -> float | None:
    """Log loss over the entropy of the observed click rate (He et al., "Practical Lessons from
    Predicting Clicks on Ads at Facebook", 2014): 1 is no better than always predicting the rate.
    Raw log loss moves with the period's CTR alone; this does not. None when undefined."""
    if loss is None or rate is None or not 0.0 < rate < 1.0:
        return None
    entropy = -(rate * math.log(rate) + (1 - rate) * math.log(1 - rate))
    return loss / entropy
