"""The retraining gate for the forecaster: champion and challenger on the days since the champion
was trained, on a tiny world of its own whose last days arrive as nightly partitions."""

from __future__ import annotations

import os

# LightGBM's OpenMP threads wait passively (set before LightGBM loads): spinning on shared cores is slow
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import pytest
from marketplace_worlds import build_world
from tiny_configs import TINY_FORECASTER

from configs import validate_config
from configs.settings import Settings
from models.forecasting.served import ServedForecaster
from training.forecaster.config import ForecasterConfig
from training.forecaster.family import FAMILY
from training.forecaster.fit import default_params
from training.pipeline import HoldoutComparison, NoHoldout, TrainingSet, train

HELD_DAYS = 4
# a deliberately broken procedure: each unregularised tree overshoots fivefold in the log link
CRIPPLED = {"learning_rate": 5.0, "num_leaves": 1024, "lambda_l2": 0.0, "min_data_in_leaf": 20}


def _config() -> ForecasterConfig:
    config = validate_config(TINY_FORECASTER, ForecasterConfig, "test config")
    assert not config.prophet.enabled
    return config


@dataclass
class GateWorld:
    settings: Settings
    held: list[date]  # the held-back UTC days, oldest first; the first two are ingested by `newer`


@pytest.fixture(scope="module")
def gate_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GateWorld]:
    """A fresh tiny world (not the session's, which must not change) with its last days held back,
    and an MLflow store of its own."""
    root = Path(tmp_path_factory.mktemp("gate-forecaster"))
    settings = Settings(data_dir=root / "data")
    held = build_world(settings, hold_back_days=HELD_DAYS)
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        settings = settings.model_copy(
            update={
                "mlflow": settings.mlflow.model_copy(
                    update={"tracking_uri": f"sqlite:///{root / 'mlflow.db'}"}
                )
            }
        )
        yield GateWorld(settings, [date.fromisoformat(day) for day in held])


@dataclass
class Models:
    champion: ServedForecaster  # crippled, trained before the held days arrived
    challenger: ServedForecaster  # default params, trained once two held days arrived
    challenger_params: dict
    training_set: TrainingSet  # the challenger's


@pytest.fixture(scope="module")
def newer(gate_world: GateWorld) -> Models:
    """Champion on the world without the held days; then two held days ingested, the features
    rebuilt, and a challenger trained on the newer data; both loaded back from the registry."""
    from features.ingest import ingest
    from features.transforms import build_feature_tables
    from tracking.registry import load_served_model

    settings, config = gate_world.settings, _config()
    champion = train(settings, FAMILY, config, params=CRIPPLED)
    assert champion.aliases == ("champion",)
    for day in gate_world.held[:2]:
        ingest(settings, settings.raw_dir, partition=day.isoformat(), progress=False)
    build_feature_tables(settings)
    training_set = FAMILY.training_set(settings, config)
    challenger = train(settings, FAMILY, config, training_set=training_set, promote_policy="never")
    assert challenger.aliases == ("challenger",)
    return Models(
        load_served_model(champion.version.uri),
        load_served_model(challenger.version.uri),
        dict(challenger.params),
        training_set,
    )


@pytest.fixture(scope="module")
def default_comparison(newer: Models) -> HoldoutComparison:
    """The crippled champion against the challenger's (default) procedure."""
    return FAMILY.compare_on_holdout(
        newer.champion, newer.challenger, newer.challenger_params, newer.training_set, _config()
    )


@pytest.mark.slow
def test_holdout_is_the_complete_days_since_the_champion_was_trained(
    gate_world: GateWorld, newer: Models, default_comparison: HoldoutComparison
) -> None:
    first_held = gate_world.held[0]
    # the champion's newest UTC day was still running in New York (UTC-4) when its delivery ended,
    # so its last complete day is the one before; the same holds for the challenger's newest day
    assert newer.champion.last_date == first_held - timedelta(days=2)
    assert newer.challenger.last_date == gate_world.held[1] - timedelta(days=1)
    comparison = default_comparison
    assert isinstance(comparison, HoldoutComparison)
    assert comparison.metric == "mase" and comparison.higher_is_better is False
    assert math.isfinite(comparison.champion) and math.isfinite(comparison.challenger)
    # the window: the day the champion saw only in part, and the first held day
    window = [first_held - timedelta(days=1), first_held]
    assert comparison.holdout.startswith(f"{window[0]}..{window[-1]} (2 days after the champion's last day")
    details = comparison.details
    assert details["holdout_days"] == 2
    assert details["holdout_rows"] == details["holdout_series"] * 2
    assert details["holdout_series"] >= 100  # LightGBM and seasonal-naive series alike
    assert all(math.isfinite(details[f"{role}_bias"]) for role in ("champion", "challenger"))
    # the challenger's conformal P10..P90 covers about 80% of the holdout's series-days; the crippled
    # champion is worse by WAPE as well as by the gate's MASE
    assert details["challenger_coverage80"] == pytest.approx(0.8, abs=0.15)
    assert details["challenger_wape"] < details["champion_wape"]
    # the challenger's procedure, refit at the champion's origin, beats the crippled champion
    assert comparison.challenger < comparison.champion


@pytest.mark.slow
def test_the_champions_own_procedure_refit_at_its_origin_scores_as_its_served_forecasts(
    newer: Models,
) -> None:
    """The gate refits a procedure on the champion's information set: given the champion's own
    params it must reproduce the champion's served score (and so its forecasts) exactly."""
    params = {**default_params(_config()), **CRIPPLED}
    comparison = FAMILY.compare_on_holdout(
        newer.champion, newer.challenger, params, newer.training_set, _config()
    )
    assert comparison.challenger == pytest.approx(comparison.champion, rel=1e-6)
    assert comparison.details["challenger_wape"] == pytest.approx(
        comparison.details["champion_wape"], rel=1e-6
    )


@pytest.mark.slow
def test_a_crippled_procedure_scores_worse_than_the_default_on_the_same_window(
    newer: Models, default_comparison: HoldoutComparison
) -> None:
    default = default_comparison
    crippled = FAMILY.compare_on_holdout(
        newer.champion,
        newer.challenger,
        {**newer.challenger_params, **CRIPPLED},
        newer.training_set,
        _config(),
    )
    assert crippled.holdout == default.holdout and crippled.champion == default.champion
    assert crippled.challenger > default.challenger * 1.05


@pytest.mark.slow
def test_served_forecast_frame_holds_what_answer_returns(newer: Models) -> None:
    model = newer.champion
    request = model.smoke_request()
    answer = model.answer(request)["forecasts"]
    product, market = request["product_ids"][0], request["market"]
    import polars as pl

    frame = model.forecast_frame(request["horizon"]).filter(
        pl.col("product_id") == product, pl.col("market_id") == market
    )
    assert [row["date"].isoformat() for row in frame.iter_rows(named=True)] == [row["date"] for row in answer]
    for row, served in zip(frame.iter_rows(named=True), answer, strict=True):
        for key in ("mean", "p10", "p50", "p90"):
            assert row[key] == pytest.approx(served[key], rel=1e-6)
    assert model.forecast_frame().height == len(model.row_of) * model.horizon


@pytest.mark.slow
def test_no_actuals_after_the_champion_is_no_holdout(newer: Models) -> None:
    # the challenger as champion: nothing in its training set comes after its last day
    with pytest.raises(NoHoldout, match=r"no actuals after the champion's last day"):
        FAMILY.compare_on_holdout(
            newer.challenger, newer.challenger, newer.challenger_params, newer.training_set, _config()
        )


@pytest.mark.slow
def test_retrain_promotes_a_better_challenger_and_refuses_a_crippled_one(
    gate_world: GateWorld, newer: Models
) -> None:
    """End to end: the crippled champion is replaced by a default retrain on the next nightly
    partition; a crippled retrain on the one after is refused and the champion stays."""
    from tracking.registry import CHAMPION, version_for_alias
    from tracking.runs import tracking_client
    from training.retrain import DECISION_TAG, retrain

    settings, config = gate_world.settings, _config()
    client = tracking_client()
    before = version_for_alias(FAMILY.registered_model, CHAMPION)

    better = retrain(settings, FAMILY, partition=gate_world.held[2].isoformat(), config=config)
    assert better.decision == "promoted", better.reasons
    assert better.metric == "mase" and better.challenger_score < better.champion_score
    assert better.champion_version == better.challenger_version != before.version
    run = client.get_run(better.run_id)
    assert run.data.tags[DECISION_TAG] == "promoted"
    for key in ("gate.champion", "gate.challenger", "gate.improvement", "gate.champion_wape"):
        assert math.isfinite(run.data.metrics[key])
    assert run.data.metrics["gate.champion"] == pytest.approx(better.champion_score)
    assert run.data.metrics["gate.improvement"] >= 0.02  # configs/retrain.yaml's forecaster margin
    tags = client.get_model_version(FAMILY.registered_model, str(better.challenger_version)).tags
    assert tags["tradewind.gate"] == "promoted"

    worse = retrain(
        settings, FAMILY, partition=gate_world.held[3].isoformat(), config=config, params=CRIPPLED
    )
    assert worse.decision == "refused", worse.reasons
    assert worse.challenger_score > worse.champion_score
    assert any(reason.startswith("mase on ") for reason in worse.reasons)
    assert version_for_alias(FAMILY.registered_model, CHAMPION).version == better.challenger_version
    assert client.get_run(worse.run_id).data.metrics["gate.improvement"] < 0
    tags = client.get_model_version(FAMILY.registered_model, str(worse.challenger_version)).tags
    assert tags["tradewind.gate"] == "refused"
