"""Monitoring: the PSI against hand-computed values, the retrain decision, and end to end on a tiny
world of this module's own (champions trained on it, the last days held back as raw partitions):
no retrain on undrifted data, live accuracy once the held-back days arrive, and a retrain with the
reason naming the feature when a feature table is shifted."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import math
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from marketplace_worlds import build_world
from tiny_configs import TINY_FORECASTER, tiny_recommender_config
from typer.testing import CliRunner

from configs import ConfigError, load_config, validate_config
from configs.settings import MlflowSettings, Settings
from training.monitoring import MonitoringConfig, MonitorResult, load_monitoring_config, monitor
from training.monitoring.drift import DriftRow
from training.monitoring.live import LiveAccuracy
from training.monitoring.monitor import REPORT_JSON, REPORT_MARKDOWN, decide
from training.monitoring.psi import categorical_psi, numeric_psi, share_psi

HELD_BACK_DAYS = 3

# ---------------------------------------------------------------------------------------------
# PSI


def test_psi_matches_a_hand_computed_example() -> None:
    # bins=2: the reference median 5.5 splits 1..10 into 50% / 50%; the current sample puts 80% in
    # the lower bin: PSI = (0.8 - 0.5) ln(0.8 / 0.5) + (0.2 - 0.5) ln(0.2 / 0.5) = 0.41589
    result = numeric_psi(np.arange(1, 11), np.array([1, 1, 1, 1, 1, 1, 1, 1, 9, 9]), bins=2)
    assert result.value == pytest.approx(0.3 * math.log(1.6) - 0.3 * math.log(0.4), abs=1e-12)
    assert result.value == pytest.approx(0.41589, abs=1e-5)
    assert result.bins == ("(-inf, 5.5]", "(5.5, inf]")
    assert result.reference_shares == (0.5, 0.5) and result.current_shares == (0.8, 0.2)


def test_empty_bins_take_epsilon_and_stay_finite() -> None:
    # bins=4 on 1..8: quartile edges 2.75, 4.5, 6.25, two values a bin; the current sample leaves the
    # two middle bins empty, which count as epsilon
    epsilon = 1e-4
    result = numeric_psi(np.arange(1, 9), np.array([1, 1, 1, 1, 7, 7, 8, 8]), bins=4, epsilon=epsilon)
    expected = 2 * (0.5 - 0.25) * math.log(0.5 / 0.25) + 2 * (epsilon - 0.25) * math.log(epsilon / 0.25)
    assert result.value == pytest.approx(expected, rel=1e-12)
    # values entirely outside the reference's range land in the open end bins: large but finite
    far = numeric_psi(np.arange(100.0), np.full(50, 1e9))
    assert math.isfinite(far.value) and far.value > 5


def test_identical_distributions_score_about_zero() -> None:
    rng = np.random.default_rng(0)
    sample = rng.normal(size=5000)
    assert numeric_psi(sample, sample).value == pytest.approx(0.0, abs=1e-12)
    other_draw = rng.normal(size=5000)
    assert numeric_psi(sample, other_draw).value < 0.01  # expected noise about 9 x 2/5000 = 0.004


def test_a_shifted_distribution_scores_above_the_alert_threshold() -> None:
    rng = np.random.default_rng(1)
    thresholds = MonitoringConfig().thresholds.feature_psi
    shifted = numeric_psi(rng.normal(size=5000), rng.normal(loc=1.0, size=5000)).value
    assert shifted > thresholds.alert
    slight = numeric_psi(rng.normal(size=5000), rng.normal(loc=0.1, size=5000)).value
    assert slight < thresholds.warn


def test_categorical_psi_compares_category_shares() -> None:
    reference = ["a"] * 50 + ["b"] * 50
    current = ["a"] * 75 + ["b"] * 25
    result = categorical_psi(reference, current)
    assert result.value == pytest.approx(0.25 * math.log(1.5) - 0.25 * math.log(0.5), abs=1e-12)
    # a category never seen in the reference, and missing values, are bins of their own
    unseen = categorical_psi(["a"] * 10, ["a"] * 5 + ["z"] * 4 + [None])
    assert unseen.bins == ("(missing)", "a", "z")
    assert math.isfinite(unseen.value) and unseen.value > 1
    # missing numeric values too
    missing = numeric_psi(np.arange(100.0), np.concatenate([np.arange(50.0), np.full(50, np.nan)]))
    assert missing.bins[-1] == "(missing)" and missing.current_shares[-1] == 0.5


def test_share_psi_on_totals() -> None:
    result = share_psi({"DE/toys": 30.0, "FR/toys": 10.0}, {"DE/toys": 10.0, "FR/toys": 30.0})
    assert result.value == pytest.approx(2 * 0.5 * math.log(3), abs=1e-12)
    assert (result.reference_rows, result.current_rows) == (40, 40)


# ---------------------------------------------------------------------------------------------
# config and decision


def test_monitoring_config_is_validated(tmp_path: Path) -> None:
    config = load_monitoring_config()
    assert config.thresholds.feature_psi.alert == 0.25 and config.thresholds.error_change == 0.10
    path = tmp_path / "monitoring.yaml"
    path.write_text("windows: {current_days: 7, refrence_days: 28}\n")
    with pytest.raises(ConfigError, match=r"unknown key 'windows\.refrence_days'"):
        load_config(path, MonitoringConfig)
    with pytest.raises(ConfigError, match=r"thresholds\.feature_psi.*must not be below warn"):
        validate_config({"thresholds": {"feature_psi": {"warn": 0.3, "alert": 0.2}}}, MonitoringConfig, "m")


def _live(value: float | None, observations: int = 500, comparable: bool = True) -> LiveAccuracy:
    return LiveAccuracy(
        metric="wape",
        higher_is_better=False,
        value=value,
        training_metric="lightgbm.wape",
        training_value=0.5,
        observations=observations,
        since="test",
        comparable=comparable,
    )


def test_decision_names_each_reason() -> None:
    config = MonitoringConfig()
    calm = DriftRow("view__a", "feature", "warn", 0.2, 500, 500)
    drifted = DriftRow("view__b", "feature", "alert", 0.4, 500, 500)
    skipped = DriftRow("view__c", "feature", "skipped", None, 5, 5)
    assert decide([calm, skipped], [], _live(0.52), config) == (False, ())
    should, reasons = decide([calm, drifted], [], _live(0.52), config)
    assert should and len(reasons) == 1 and "view__b PSI 0.400" in reasons[0]
    pctr = DriftRow("prediction.pctr", "prediction", "alert", 0.3, 500, 500)
    assert "prediction drift: prediction.pctr" in decide([], [pctr], _live(None), config)[1][0]
    # error 0.56 vs 0.5 at training: 12% worse, over 10%
    should, reasons = decide([], [], _live(0.56), config)
    assert should and "12.0% worse" in reasons[0]
    assert decide([], [], _live(0.54), config) == (False, ())  # 8% worse: under the threshold
    assert decide([], [], _live(0.3), config) == (False, ())  # better never triggers
    assert decide([], [], _live(0.56, observations=10), config) == (False, ())  # too few actuals
    assert decide([], [], _live(0.56, comparable=False), config) == (False, ())


# ---------------------------------------------------------------------------------------------
# end to end


@dataclass(frozen=True)
class World:
    settings: Settings
    tracking_uri: str
    recommender_config: object
    forecaster_config: object


def _recommender_config() -> object:
    return tiny_recommender_config()


def _forecaster_config() -> object:
    from training.forecaster.config import ForecasterConfig

    return validate_config(TINY_FORECASTER, ForecasterConfig, "test config")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """A fresh tiny world with its last days held back, and a recommender and forecaster champion."""
    from training.forecaster.family import FAMILY as FORECASTER
    from training.pipeline import train
    from training.recommender.family import FAMILY as RECOMMENDER

    folder = tmp_path_factory.mktemp("monitoring-world")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    settings = Settings(data_dir=folder / "data", mlflow=MlflowSettings(tracking_uri=uri))
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        build_world(settings, hold_back_days=HELD_BACK_DAYS)
        recommender_config, forecaster_config = _recommender_config(), _forecaster_config()
        train(settings, RECOMMENDER, recommender_config)
        train(settings, FORECASTER, forecaster_config)
        yield World(settings, uri, recommender_config, forecaster_config)


def _copy(world: World, name: str) -> Settings:
    """The world's data folder copied (the champions stay in the shared MLflow store)."""
    target = world.settings.root.parent / name
    shutil.copytree(world.settings.root, target)
    return world.settings.model_copy(update={"data_dir": target})


def _monitor(world: World, settings: Settings, command: str) -> MonitorResult:
    from training.families import family

    config = world.recommender_config if command == "recommender" else world.forecaster_config
    return monitor(settings, family(command), family_config=config)


@pytest.mark.parametrize("command", ["recommender", "forecaster"])
def test_undrifted_world_needs_no_retrain(world: World, command: str) -> None:
    from tracking.runs import tracking_client

    result = _monitor(world, world.settings, command)
    assert result.should_retrain is False and result.reasons == ()
    scored = [row for row in result.features if row.psi is not None]
    assert len(scored) >= 10 and all(row.status != "alert" for row in scored)
    assert result.live.value is None  # nothing arrived since training yet
    assert result.live.training_value is not None  # the champion run's figure was found

    run = tracking_client().get_run(result.run_id)
    assert run.info.run_name == f"monitor-{command}"
    assert run.data.tags["tradewind.family"] in ("recommender", "forecaster")
    assert run.data.tags["tradewind.monitor.should_retrain"] == "false"
    assert run.data.metrics["should_retrain"] == 0.0
    assert run.data.metrics[f"psi.{scored[0].name}"] == pytest.approx(scored[0].psi)
    artifacts = {
        item.path
        for folder in ("", "plots", "tables")
        for item in tracking_client().list_artifacts(result.run_id, folder)
    }
    assert {REPORT_JSON, REPORT_MARKDOWN, "plots/psi.png", "tables/psi.csv"} <= artifacts


@pytest.fixture(scope="module")
def arrived(world: World) -> Settings:
    """A copy of the world after the held-back days arrived (ingested, feature tables rebuilt)."""
    from features.ingest import ingest
    from features.simulator.partitions import raw_partitions
    from features.transforms import build_feature_tables

    settings = _copy(world, "arrived")
    for partition in raw_partitions(settings.raw_dir):
        ingest(settings, settings.raw_dir, partition=partition, progress=False)
    build_feature_tables(settings)
    return settings


def test_live_accuracy_once_actuals_arrive(world: World, arrived: Settings) -> None:
    from tracking.registry import CHAMPION, version_for_alias
    from tracking.runs import tracking_client

    forecaster = _monitor(world, arrived, "forecaster")
    live = forecaster.live
    champion = version_for_alias("tradewind-forecaster", CHAMPION)
    trained = tracking_client().get_run(champion.run_id).data.metrics["lightgbm.wape"]
    assert live.training_value == pytest.approx(trained)
    # the 12 LightGBM series on each forecast day that is over in every market
    assert live.observations == 12 * live.details["days"] and live.details["days"] >= 1
    assert live.value is not None and math.isfinite(live.value)
    assert live.error_change == pytest.approx((live.value - trained) / trained)
    # undrifted, and too few actuals at this scale to act on the error change; with the minimum
    # lowered, the decision follows the 10% threshold
    assert forecaster.should_retrain is False
    eager = MonitoringConfig.model_validate({"live": {"min_observations": 1}})
    reasons = decide(forecaster.features, forecaster.predictions, live, eager)[1]
    assert any("live wape" in reason for reason in reasons) is (live.error_change > 0.10)
    run = tracking_client().get_run(forecaster.run_id)
    assert run.data.metrics["live.wape"] == pytest.approx(live.value)
    assert "plots/live_error.png" in {
        item.path for item in tracking_client().list_artifacts(forecaster.run_id, "plots")
    }

    recommender = _monitor(world, arrived, "recommender")
    hit_rate = recommender.live
    # the share of buyers since training (up to max_users of them) whose top-k held an item they bought
    assert hit_rate.details["users"] == hit_rate.observations and 0 < hit_rate.observations <= 400
    hits = hit_rate.value * hit_rate.observations
    assert hits == pytest.approx(round(hits)), "a hit rate over whole users"
    # a few days of purchases are no match for the 28-day holdout: reported, never a trigger
    assert hit_rate.comparable is False and recommender.should_retrain is False


def test_injected_feature_drift_triggers_a_retrain(world: World, tmp_path: Path) -> None:
    import json

    from cli.app import app
    from features.transforms import feature_table_path
    from training.monitoring.drift import feature_drift

    _, span = feature_drift(world.settings, "recommender", load_monitoring_config())
    drifted = _copy(world, "drifted")
    path = feature_table_path(drifted.feature_dir, "user_activity")
    in_current = pl.col("event_timestamp") > span.current_start
    shifted = pl.read_parquet(path).with_columns(
        pl.when(in_current)
        .then(pl.col("views_30d") * 5 + 20)
        .otherwise(pl.col("views_30d"))
        .alias("views_30d")
    )
    shifted.write_parquet(path)

    # through the CLI: --exit-code says 4 (retrain advised) on the drifted copy, 0 on the original
    runner = CliRunner()
    report = tmp_path / "report.json"
    env = {"TRADEWIND_DATA_DIR": str(drifted.root), "MLFLOW_TRACKING_URI": world.tracking_uri}
    outcome = runner.invoke(app, ["monitor", "recommender", "--exit-code", "--json", str(report)], env=env)
    assert outcome.exit_code == 4, outcome.output
    assert "RETRAIN" in outcome.output and "user_activity__views_30d" in outcome.output
    result = json.loads(report.read_text())
    assert result["should_retrain"] is True
    assert len(result["reasons"]) == 1 and "feature drift: user_activity__views_30d" in result["reasons"][0]
    assert [row["name"] for row in result["features"] if row["status"] == "alert"] == [
        "user_activity__views_30d"
    ]

    env = {"TRADEWIND_DATA_DIR": str(world.settings.root), "MLFLOW_TRACKING_URI": world.tracking_uri}
    outcome = runner.invoke(app, ["monitor", "recommender", "--exit-code"], env=env)
    assert outcome.exit_code == 0, outcome.output


def test_seen_until_reads_what_was_ingested_before_training(tmp_path: Path) -> None:
    import json
    from datetime import UTC, datetime

    from features.tables import partition_path
    from training.monitoring.live import seen_until

    settings = Settings(data_dir=tmp_path / "data")
    for partition, newest in (("generated", "2026-10-26T23:00:00"), ("2026-10-27", "2026-10-27T22:00:00")):
        path = partition_path(settings.contract_dir, "auctions", partition)
        path.parent.mkdir(parents=True, exist_ok=True)
        stamp = datetime.fromisoformat(newest).replace(tzinfo=UTC)
        pl.DataFrame({"request_ts": [stamp.replace(hour=1), stamp]}).write_parquet(path)
    log = [
        {"ingested_at": "2026-12-01T08:00:00+00:00", "table": "auctions", "partition": "generated"},
        {"ingested_at": "2026-12-01T08:00:00+00:00", "table": "events", "partition": "2026-10-27"},
        {"ingested_at": "2026-12-01T10:00:00+00:00", "table": "auctions", "partition": "2026-10-27"},
    ]
    (settings.root / "ingest_log.jsonl").write_text("".join(json.dumps(entry) + "\n" for entry in log))
    trained = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    # the champion (trained at 09:00) saw the generated partition, not the day ingested at 10:00
    assert seen_until(settings, "auctions", "request_ts", trained) == datetime(2026, 10, 26, 23, tzinfo=UTC)
    assert seen_until(settings, "auctions", "request_ts", trained.replace(hour=11)) == datetime(
        2026, 10, 27, 22, tzinfo=UTC
    )
    assert seen_until(settings, "auctions", "request_ts", None) is None
