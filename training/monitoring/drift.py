"""Feature drift: PSI of every feature of a family's Feast feature service, latest window vs the one before.

The feature tables (`<data>/features/<view>.parquet`, what Feast's offline store reads) are scanned
directly: the current window is the last `current_days` days up to the newest `event_timestamp` of
any of the service's tables, the reference window the `reference_days` before it. A feature row is
written when an entity's values change (features/transforms), so a window holds the states that were
current in it, weighted by how often they changed; a table with too few rows in a window (a static
catalogue, a campaign that stopped) is reported as skipped rather than scored on noise.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

import polars as pl

from configs.settings import Settings
from training.monitoring.config import MonitoringConfig, PsiThresholds
from training.monitoring.psi import PsiResult, psi_for_column

Status = Literal["ok", "warn", "alert", "skipped"]


@dataclass(frozen=True)
class WindowSpan:
    """Reference (reference_start, current_start] and current (current_start, end]."""

    reference_start: datetime
    current_start: datetime
    end: datetime

    @classmethod
    def ending(cls, end: datetime, config: MonitoringConfig) -> WindowSpan:
        current_start = end - timedelta(days=config.windows.current_days)
        return cls(current_start - timedelta(days=config.windows.reference_days), current_start, end)

    def describe(self) -> str:
        return (
            f"reference {self.reference_start:%Y-%m-%d %H:%M} .. {self.current_start:%Y-%m-%d %H:%M}, "
            f"current .. {self.end:%Y-%m-%d %H:%M} UTC"
        )


@dataclass(frozen=True)
class DriftRow:
    """One PSI: a feature (`<view>__<feature>`) or a prediction (`prediction.<what>`)."""

    name: str
    kind: Literal["feature", "prediction"]
    status: Status
    psi: float | None
    reference_rows: int
    current_rows: int
    note: str = ""
    result: PsiResult | None = None


def classify(psi: float, thresholds: PsiThresholds) -> Status:
    if psi >= thresholds.alert:
        return "alert"
    return "warn" if psi >= thresholds.warn else "ok"


def scored_row(
    name: str,
    kind: Literal["feature", "prediction"],
    reference: pl.Series,
    current: pl.Series,
    config: MonitoringConfig,
    thresholds: PsiThresholds,
) -> DriftRow:
    """The PSI row of two samples, or a skipped row when either is under `psi.min_rows`."""
    minimum = config.psi.min_rows
    if len(reference) < minimum or len(current) < minimum:
        note = f"too few rows to score (need {minimum} a window)"
        return DriftRow(name, kind, "skipped", None, len(reference), len(current), note)
    result = psi_for_column(reference, current, config.psi.bins, config.psi.epsilon)
    return DriftRow(
        name,
        kind,
        classify(result.value, thresholds),
        result.value,
        result.reference_rows,
        result.current_rows,
        result=result,
    )


def sample_rows(frame: pl.DataFrame, limit: int, seed: int) -> pl.DataFrame:
    return frame.sample(limit, seed=seed) if frame.height > limit else frame


def feature_drift(
    settings: Settings, service: str, config: MonitoringConfig, end: datetime | None = None
) -> tuple[list[DriftRow], WindowSpan]:
    """PSI per feature of `service` (a Feast feature service: recommendation, forecasting, bidding)."""
    from features.feature_repo.definitions import SERVICE_VIEWS
    from features.transforms import FEATURE_TABLES, feature_table_path
    from features.transforms.specs import EVENT_TIMESTAMP

    if service not in SERVICE_VIEWS:
        raise LookupError(f"unknown feature service {service!r} (known: {', '.join(SERVICE_VIEWS)})")
    views: Sequence[str] = SERVICE_VIEWS[service]
    paths = {view: feature_table_path(settings.feature_dir, view) for view in views}
    missing = [str(path) for path in paths.values() if not path.exists()]
    if missing:
        raise FileNotFoundError(
            f"feature table {missing[0]} is missing: run `tradewind features build` first"
        )
    if end is None:
        newest = [
            pl.scan_parquet(path).select(pl.col(EVENT_TIMESTAMP).max()).collect().item()
            for path in paths.values()
        ]
        known = [moment for moment in newest if moment is not None]
        if not known:
            raise LookupError(f"feature service {service!r}: every feature table is empty")
        end = max(known)
    span = WindowSpan.ending(end, config)
    rows: list[DriftRow] = []
    for view in views:
        names = FEATURE_TABLES[view].feature_names
        stamp = pl.col(EVENT_TIMESTAMP)
        frame = (
            pl.scan_parquet(paths[view])
            .filter((stamp > span.reference_start) & (stamp <= span.end))
            .select(EVENT_TIMESTAMP, *names)
            .collect()
        )
        is_current = frame[EVENT_TIMESTAMP] > span.current_start
        reference = sample_rows(frame.filter(~is_current), config.psi.max_rows, config.live.seed)
        current = sample_rows(frame.filter(is_current), config.psi.max_rows, config.live.seed)
        for name in names:
            rows.append(
                scored_row(
                    f"{view}__{name}",
                    "feature",
                    reference[name],
                    current[name],
                    config,
                    config.thresholds.feature_psi,
                )
            )
    return rows, span
