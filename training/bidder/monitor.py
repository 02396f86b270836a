"""The bidder's live check for monitoring: what the serving champion predicts now, and how right
it has been since it was trained.

Prediction PSI of the click model's pCTR over bid requests, reference vs current window. Live
accuracy: normalized log loss (log loss / entropy of the observed CTR; raw log loss tracks the
period's CTR more than the model) of pCTR on won impressions of auctions the champion never saw
(partitions ingested after its training run started, from `ingest_log.jsonl`) against the same
ratio of its held-out `click_model.log_loss` and `observed_rate`, with the raw log loss and the
calibration ratio (mean pCTR / observed CTR) beside it.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from configs.settings import Settings
from training.bidder.data import training_set
from training.monitoring.config import MonitoringConfig
from training.monitoring.drift import WindowSpan, sample_rows, scored_row
from training.monitoring.live import (
    Champion,
    ChampionCheck,
    LiveAccuracy,
    normalized_log_loss,
    seen_until,
)


def live_check(settings: Settings, champion: Champion, config: MonitoringConfig) -> ChampionCheck:
    """Prediction PSI of the champion's pCTR over bid requests, reference vs current window, and the
    normalized log loss of its pCTR on won impressions of auctions it never saw."""
    from sklearn.metrics import log_loss

    model = champion.model
    data = training_set(settings, champion.family_config).data
    requests = data.requests
    frame = requests.select("request_ts", "local_date", "won", "click").with_columns(
        pl.Series("pctr", model.click_model.predict(requests), dtype=pl.Float64)
    )
    span = WindowSpan.ending(frame["request_ts"].max(), config)
    stamp = pl.col("request_ts")
    reference = frame.filter((stamp > span.reference_start) & (stamp <= span.current_start))
    current = frame.filter(stamp > span.current_start)
    limit, seed = config.psi.max_rows, config.live.seed
    row = scored_row(
        "prediction.pctr",
        "prediction",
        sample_rows(reference, limit, seed)["pctr"],
        sample_rows(current, limit, seed)["pctr"],
        config,
        config.thresholds.prediction_psi,
    )
    cutoff = seen_until(settings, "auctions", "request_ts", champion.trained_at)
    training_loss = champion.metrics.get("click_model.log_loss")
    training_rate = champion.metrics.get("click_model.observed_rate")
    base = {
        "metric": "normalized_log_loss",
        "higher_is_better": False,
        "training_metric": "click_model.log_loss / H(click_model.observed_rate)",
        "training_value": normalized_log_loss(training_loss, training_rate),
    }
    if cutoff is None:
        live = LiveAccuracy(
            value=None,
            observations=0,
            since="unknown",
            note="no ingest record of the auctions the champion trained on (ingest_log.jsonl)",
            **base,
        )
        return ChampionCheck([row], live, span)
    won = frame.filter((stamp > cutoff) & pl.col("won") & pl.col("click").is_not_null())
    since = f"won impressions of auctions after {cutoff:%Y-%m-%d %H:%M} UTC (the champion's newest)"
    if won.height == 0:
        live = LiveAccuracy(
            value=None, observations=0, since=since, note="no won impression since the champion", **base
        )
        return ChampionCheck([row], live, span)

    def scores(part: pl.DataFrame) -> tuple[float, float]:
        labels = part["click"].cast(pl.Int64).to_numpy()
        loss = float(log_loss(labels, np.clip(part["pctr"].to_numpy(), 1e-7, 1 - 1e-7), labels=[0, 1]))
        return loss, float(labels.mean())

    loss, observed = scores(won)
    per_day = []
    for (day,), part in won.sort("local_date").group_by("local_date", maintain_order=True):
        value = normalized_log_loss(*scores(part))
        if value is not None:
            per_day.append((day.isoformat(), value))
    mean_pctr = float(won["pctr"].mean())
    details = {
        "log_loss": loss,
        "mean_pctr": mean_pctr,
        "observed_ctr": observed,
        "clicks": float(won["click"].cast(pl.Int64).sum()),
    }
    if observed > 0:
        details["calibration_ratio"] = mean_pctr / observed
    if training_loss is not None:
        details["training_log_loss"] = training_loss
    notes = []
    if observed == 0:
        notes.append("no click since the champion: normalized log loss undefined")
    if base["training_value"] is None:
        notes.append("no click on the champion's held-out days (or no figure): nothing to compare with")
    live = LiveAccuracy(
        value=normalized_log_loss(loss, observed),
        observations=won.height,
        since=since,
        details=details,
        per_day=tuple(per_day),
        note="; ".join(notes),
        **base,
    )
    return ChampionCheck([row], live, span)
