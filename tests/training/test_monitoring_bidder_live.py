"""The bidder's live monitoring on constructed outcomes whose log loss and calibration are known:
only won impressions of auctions after the champion's newest one count, and the figures are the
textbook ones (log loss, its ratio to the entropy of the observed rate, mean pCTR / observed CTR)."""

from __future__ import annotations

import json
import math
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import polars as pl
import pytest

from configs.settings import Settings
from training.bidder.monitor import live_check
from training.monitoring.config import MonitoringConfig
from training.monitoring.live import Champion, normalized_log_loss

TRAINED_AT = datetime(2026, 1, 2, tzinfo=UTC)
NEWEST_SEEN = datetime(2026, 1, 10, tzinfo=UTC)  # the newest auction the champion trained on


def _entropy(rate: float) -> float:
    return -(rate * math.log(rate) + (1 - rate) * math.log(1 - rate))


def _log_loss(rate: float, predicted: float) -> float:
    """Log loss of a constant prediction on outcomes whose click rate is `rate`."""
    return -(rate * math.log(predicted) + (1 - rate) * math.log(1 - predicted))


def _requests(
    day: date, won: int, clicks: int, pctr: float, *, lost: int = 0, unlabelled: int = 0
) -> pl.DataFrame:
    start = datetime(day.year, day.month, day.day, 12, tzinfo=UTC)
    count = won + lost + unlabelled
    return pl.DataFrame(
        {
            "request_ts": [start + timedelta(seconds=index) for index in range(count)],
            "local_date": [day] * count,
            "won": [True] * won + [False] * lost + [True] * unlabelled,
            "click": [index < clicks for index in range(won)] + [None] * (lost + unlabelled),
            "pctr": [pctr] * count,  # what the constructed click model answers
        },
        schema_overrides={"request_ts": pl.Datetime("us", "UTC"), "click": pl.Boolean},
    )


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """A data folder whose ingest log says the champion trained on auctions up to NEWEST_SEEN."""
    settings = Settings(data_dir=tmp_path / "data")
    seen = settings.contract_dir / "auctions"
    seen.mkdir(parents=True)
    pl.DataFrame({"request_ts": [NEWEST_SEEN - timedelta(days=1), NEWEST_SEEN]}).write_parquet(
        seen / "generated.parquet"
    )
    entry = {"table": "auctions", "partition": "generated", "ingested_at": "2026-01-01T00:00:00+00:00"}
    (settings.root / "ingest_log.jsonl").write_text(json.dumps(entry) + "\n")
    return settings


def test_bidder_live_log_loss_and_calibration_on_known_outcomes(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    requests = pl.concat(
        [
            # before the champion's newest auction: confident and right, must not count
            _requests(date(2026, 1, 9), won=50, clicks=50, pctr=0.9),
            # after it: pCTR 0.1 throughout; day one clicks 20 of 100, day two 10 of 100 (calibrated)
            _requests(date(2026, 1, 11), won=100, clicks=20, pctr=0.1, lost=30),
            _requests(date(2026, 1, 12), won=100, clicks=10, pctr=0.1, unlabelled=5),
        ]
    )
    training_set = SimpleNamespace(data=SimpleNamespace(requests=requests))
    monkeypatch.setattr("training.bidder.monitor.training_set", lambda *_: training_set)
    click_model = SimpleNamespace(predict=lambda frame: frame["pctr"].to_numpy())
    champion = Champion(
        command="bidder",
        version=1,
        run_id="run",
        trained_at=TRAINED_AT,
        metrics={"click_model.log_loss": 0.3, "click_model.observed_rate": 0.1},
        model=SimpleNamespace(click_model=click_model),
        family_config=None,
    )

    live = live_check(settings, champion, MonitoringConfig()).live

    # 200 won impressions with a known click (lost and unlabelled ones left out), 30 clicks
    assert live.observations == 200 and live.details["clicks"] == 30
    assert live.details["observed_ctr"] == pytest.approx(0.15)
    assert live.details["mean_pctr"] == pytest.approx(0.1)
    assert live.details["calibration_ratio"] == pytest.approx(0.1 / 0.15), "pCTR a third too low"
    assert live.details["log_loss"] == pytest.approx(_log_loss(0.15, 0.1))
    assert live.value == pytest.approx(_log_loss(0.15, 0.1) / _entropy(0.15))
    # per day: too low on the first, exactly the rate on the second (no better than the rate: 1)
    assert [day for day, _ in live.per_day] == ["2026-01-11", "2026-01-12"]
    assert live.per_day[0][1] == pytest.approx(_log_loss(0.2, 0.1) / _entropy(0.2))
    assert live.per_day[1][1] == pytest.approx(1.0)
    # against the champion's held-out figure: 0.3 / H(0.1)
    assert live.training_value == pytest.approx(0.3 / _entropy(0.1))
    assert live.error_change == pytest.approx(live.value / live.training_value - 1)
    assert live.note == ""


def test_normalized_log_loss_is_one_for_the_base_rate_and_undefined_without_clicks() -> None:
    assert normalized_log_loss(_entropy(0.05), 0.05) == pytest.approx(1.0)
    assert normalized_log_loss(0.1, 0.0) is None and normalized_log_loss(0.1, 1.0) is None
    assert normalized_log_loss(None, 0.1) is None
