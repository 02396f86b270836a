"""`monitor(settings, family)`: drift and live accuracy of the serving champion, one MLflow run a call.

The run (`monitor-<model>`, tagged with the family) holds the PSI of every feature and prediction as
metrics, the live error beside the training-time one, the decision (`should_retrain`, 0/1) and why,
a PSI bar chart with the thresholds, the live error per day, the PSI table and the report itself
(`monitor_report.json` and `monitor_report.md`).

What triggers a retrain (configs/monitoring.yaml):
- any feature or prediction PSI at or above its `alert` threshold (0.25);
- the live error worse than the training-time figure by more than `error_change` (10% relative),
  once at least `live.min_observations` actuals have arrived and the two figures are comparable.
`warn` (0.1) is reported and plotted, never a trigger.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from typing import Any

from configs.settings import Settings
from training.monitoring.config import MonitoringConfig, load_monitoring_config
from training.monitoring.drift import DriftRow, WindowSpan, feature_drift
from training.monitoring.live import Champion, LiveAccuracy
from training.pipeline import Family, load_family_config

SHOULD_RETRAIN_TAG = "tradewind.monitor.should_retrain"
CHAMPION_VERSION_TAG = "tradewind.monitor.champion_version"
REPORT_JSON = "monitor_report.json"
REPORT_MARKDOWN = "monitor_report.md"


class NoChampion(LookupError):
    """The model has no champion version to monitor yet."""


@dataclass(frozen=True)
class MonitorResult:
    model: str
    champion_version: int
    window: WindowSpan
    features: list[DriftRow]
    predictions: list[DriftRow]
    live: LiveAccuracy
    should_retrain: bool
    reasons: tuple[str, ...]
    run_id: str | None
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        """JSON-able: the report artifact and `tradewind monitor --json`."""

        def drift(row: DriftRow) -> dict[str, Any]:
            item = {key: value for key, value in asdict(row).items() if key != "result"}
            if row.result is not None:
                item["bins"] = list(row.result.bins)
                item["reference_shares"] = list(row.result.reference_shares)
                item["current_shares"] = list(row.result.current_shares)
            return item

        live = asdict(self.live)
        live["error_change"] = self.live.error_change
        return {
            "model": self.model,
            "champion_version": self.champion_version,
            "window": {
                "reference_start": self.window.reference_start.isoformat(),
                "current_start": self.window.current_start.isoformat(),
                "end": self.window.end.isoformat(),
            },
            "should_retrain": self.should_retrain,
            "reasons": list(self.reasons),
            "features": [drift(row) for row in self.features],
            "predictions": [drift(row) for row in self.predictions],
            "live": live,
            "run_id": self.run_id,
            "seconds": self.seconds,
        }


def decide(
    features: Sequence[DriftRow],
    predictions: Sequence[DriftRow],
    live: LiveAccuracy,
    config: MonitoringConfig,
) -> tuple[bool, tuple[str, ...]]:
    """Whether to retrain, and every reason why (empty: no)."""
    reasons = []
    for row, thresholds in [
        *((row, config.thresholds.feature_psi) for row in features),
        *((row, config.thresholds.prediction_psi) for row in predictions),
    ]:
        if row.status == "alert" and row.psi is not None:
            reasons.append(f"{row.kind} drift: {row.name} PSI {row.psi:.3f} >= {thresholds.alert:g}")
    change = live.error_change
    limit = config.thresholds.error_change
    if (
        change is not None
        and change > limit
        and live.comparable
        and live.observations >= config.live.min_observations
    ):
        reasons.append(
            f"live {live.metric} {live.value:.4g} vs {live.training_value:.4g} at training "
            f"({live.training_metric}): {change:.1%} worse, over the {limit:.0%} threshold"
        )
    return bool(reasons), tuple(reasons)


def load_champion(family: Family, family_config: Any) -> Champion:
    """The serving champion as serving loads it, with its training run's start and metrics."""
    from tracking.registry import CHAMPION, version_for_alias
    from tracking.runs import tracking_client
    from training.retrain import load_served_model

    version = version_for_alias(family.registered_model, CHAMPION)
    if version is None:
        raise NoChampion(
            f"{family.registered_model}: no champion to monitor yet (tradewind train {family.name})"
        )
    metrics: dict[str, float] = {}
    trained_at = None
    if version.run_id:
        run = tracking_client().get_run(version.run_id)
        metrics = dict(run.data.metrics)
        trained_at = datetime.fromtimestamp(run.info.start_time / 1000, UTC)
    model = load_served_model(version.uri)
    return Champion(family.name, version.version, version.run_id, trained_at, metrics, model, family_config)


def monitor(
    settings: Settings,
    family: Family,
    config: MonitoringConfig | None = None,
    *,
    family_config: Any = None,
    log: bool = True,
) -> MonitorResult:
    """Feature drift, prediction drift and live accuracy of `family`'s champion; the decision."""
    from tracking.runs import configure_tracking

    started = time.perf_counter()
    config = config or load_monitoring_config()
    family_config = family_config if family_config is not None else load_family_config(family)
    configure_tracking(settings)
    champion = load_champion(family, family_config)
    features, span = feature_drift(settings, family.feature_service, config)
    check = family.live_check(settings, champion, config)
    should_retrain, reasons = decide(features, check.predictions, check.live, config)
    result = MonitorResult(
        family.name,
        champion.version,
        span,
        features,
        check.predictions,
        check.live,
        should_retrain,
        reasons,
        None,
        time.perf_counter() - started,
    )
    if log:
        result = log_monitor_run(settings, family, result, config)
    return result


# ---------------------------------------------------------------------------------------------
# the MLflow run


def log_monitor_run(
    settings: Settings, family: Family, result: MonitorResult, config: MonitoringConfig
) -> MonitorResult:
    import mlflow
    import polars as pl

    from tracking.runs import log_figure, log_metrics, log_params, log_table, tracked_run

    tags = {
        SHOULD_RETRAIN_TAG: str(result.should_retrain).lower(),
        CHAMPION_VERSION_TAG: str(result.champion_version),
    }
    with tracked_run(settings, f"monitor-{result.model}", family.name, tags=tags) as run:
        log_params(config)
        metrics: dict[str, Any] = {
            "should_retrain": float(result.should_retrain),
            "alerts": float(sum(row.status == "alert" for row in [*result.features, *result.predictions])),
            "warnings": float(sum(row.status == "warn" for row in [*result.features, *result.predictions])),
            "psi": {row.name: row.psi for row in result.features if row.psi is not None},
            "prediction_psi": {
                row.name.removeprefix("prediction."): row.psi
                for row in result.predictions
                if row.psi is not None
            },
        }
        live = result.live
        live_metrics = {"observations": float(live.observations)}
        if live.value is not None:
            live_metrics[live.metric] = live.value
        if live.training_value is not None:
            live_metrics[f"training_{live.metric}"] = live.training_value
        if live.error_change is not None:
            live_metrics["error_change"] = live.error_change
        live_metrics.update({key: value for key, value in live.details.items() if math.isfinite(value)})
        metrics["live"] = live_metrics
        log_metrics(metrics)
        rows = [*result.features, *result.predictions]
        table = pl.DataFrame(
            {
                "name": [row.name for row in rows],
                "kind": [row.kind for row in rows],
                "status": [row.status for row in rows],
                "psi": [row.psi for row in rows],
                "reference_rows": [row.reference_rows for row in rows],
                "current_rows": [row.current_rows for row in rows],
                "note": [row.note for row in rows],
            },
            schema_overrides={"psi": pl.Float64},
        )
        log_table(table, "psi")
        log_figure(psi_figure(rows, config, result.model), "psi")
        if live.per_day:
            log_figure(live_figure(live, config), "live_error")
        finished = replace(result, run_id=run.info.run_id)
        mlflow.log_dict(finished.as_dict(), REPORT_JSON)
        mlflow.log_text(report_markdown(finished, config), REPORT_MARKDOWN)
    return finished


def psi_figure(rows: Sequence[DriftRow], config: MonitoringConfig, model: str) -> Any:
    from matplotlib.figure import Figure

    scored = [row for row in rows if row.psi is not None]
    figure = Figure(figsize=(9, max(2.5, 0.28 * len(scored) + 1.2)))
    axes = figure.subplots()
    colours = {"ok": "#4c72b0", "warn": "#dd8452", "alert": "#c44e52"}
    names = [row.name for row in scored]
    axes.barh(names, [row.psi for row in scored], color=[colours[row.status] for row in scored])
    thresholds = config.thresholds.feature_psi
    axes.axvline(thresholds.warn, color="#dd8452", linestyle="--", label=f"warn {thresholds.warn:g}")
    axes.axvline(thresholds.alert, color="#c44e52", linestyle="--", label=f"alert {thresholds.alert:g}")
    axes.invert_yaxis()
    axes.set_xlabel("PSI (current window vs reference window)")
    skipped = len(rows) - len(scored)
    axes.set_title(
        f"{model}: PSI per feature and prediction"
        + (f" ({skipped} skipped: too few rows)" if skipped else "")
    )
    axes.legend(loc="lower right")
    axes.tick_params(axis="y", labelsize=7)
    return figure


def live_figure(live: LiveAccuracy, config: MonitoringConfig) -> Any:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8, 3.5))
    axes = figure.subplots()
    days = [day for day, _ in live.per_day]
    axes.plot(days, [value for _, value in live.per_day], marker="o", label=f"live {live.metric} per day")
    if live.training_value is not None:
        limit = config.thresholds.error_change
        worse = live.training_value * (1 - limit if live.higher_is_better else 1 + limit)
        axes.axhline(
            live.training_value, color="black", linestyle="-", label=f"at training ({live.training_metric})"
        )
        axes.axhline(worse, color="#c44e52", linestyle="--", label=f"{limit:.0%} worse: retrain")
    axes.set_ylabel(live.metric)
    axes.set_title(f"Live {live.metric} since training ({live.observations} observations)")
    axes.tick_params(axis="x", rotation=45, labelsize=7)
    axes.legend(fontsize=7)
    return figure


def report_markdown(result: MonitorResult, config: MonitoringConfig) -> str:
    live = result.live
    verdict = "**retrain**" if result.should_retrain else "no retrain needed"
    lines = [
        f"# Monitor: {result.model} (champion version {result.champion_version})",
        "",
        f"Decision: {verdict}.",
        *(f"- {reason}" for reason in result.reasons),
        "",
        f"Windows: {result.window.describe()}. PSI thresholds: warn {config.thresholds.feature_psi.warn:g}, "
        f"alert {config.thresholds.feature_psi.alert:g}; error change {config.thresholds.error_change:.0%}.",
        "",
        "## Live accuracy",
        "",
        f"- since: {live.since}",
        f"- {live.metric}: {_number(live.value)} (at training, {live.training_metric}: "
        f"{_number(live.training_value)}); error change {_percent(live.error_change)} (positive: worse); "
        f"{live.observations} observations",
        *(f"- {key}: {_number(value)}" for key, value in live.details.items()),
        *([f"- note: {live.note}"] if live.note else []),
        "",
        "## PSI",
        "",
        "| name | kind | status | PSI | reference rows | current rows | note |",
        "|---|---|---|---|---|---|---|",
        *(
            f"| {row.name} | {row.kind} | {row.status} | {_number(row.psi)} | {row.reference_rows} | "
            f"{row.current_rows} | {row.note} |"
            for row in [*result.predictions, *result.features]
        ),
    ]
    return "\n".join(lines) + "\n"


def _number(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.4g}"


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.1%}"
