"""Tracking and registry against the embedded store: SQLite plus a local artifact folder, no server."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urlparse

import lightgbm
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import mlflow
import numpy as np
import pandas as pd
import polars as pl
import pytest
from pydantic import BaseModel

from configs.settings import Settings
from tracking.registry import (
    alias_uri,
    load_by_alias,
    promote,
    register_model,
    set_alias,
    version_for_alias,
)
from tracking.runs import (
    FAMILY_TAG,
    FEATURE_SERVICE_TAG,
    configure_tracking,
    log_data_lineage,
    log_figure,
    log_metrics,
    log_params,
    log_table,
    tracked_run,
)


class Multiplier(mlflow.pyfunc.PythonModel):
    """Multiplies its input by a factor read from an artifact file, as real models read weights."""

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        self.factor = float(Path(context.artifacts["factor"]).read_text())

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        return model_input * self.factor


class TrainerConfig(BaseModel):
    learning_rate: float = 0.05
    layers: list[int] = [64, 32]


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    # one store for the module: creating a fresh SQLite store runs MLflow's migrations (about 2 s)
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
        monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
        yield Settings(data_dir=tmp_path_factory.mktemp("data"))


def local_artifact(run: mlflow.entities.Run, artifact_path: str) -> Path:
    return Path(unquote(urlparse(run.info.artifact_uri).path)) / artifact_path


def register_multiplier(settings: Settings, name: str, factor: float, tmp_path: Path) -> int:
    factor_file = tmp_path / f"factor-{factor}.txt"
    factor_file.write_text(str(factor))
    frame = pd.DataFrame({"quantity": [1.0, 2.0, 4.0]})
    with tracked_run(settings, f"train-{name}", family="forecaster"):
        version = register_model(
            name,
            Multiplier(),
            input_example=frame,
            output_example=frame * factor,
            artifacts={"factor": factor_file},
        )
    return version.version


def test_configure_tracking_is_idempotent_and_keeps_everything_local(settings: Settings) -> None:
    first = configure_tracking(settings)
    second = configure_tracking(settings)

    assert first == second
    assert (settings.root / "mlflow" / "mlflow.db").is_file()
    experiments = mlflow.MlflowClient().search_experiments(filter_string="name = 'tradewind'")
    assert [experiment.experiment_id for experiment in experiments] == [first]
    assert experiments[0].artifact_location == settings.mlflow_artifact_root.as_uri()
    # MLflow exports the URI to the environment, where it would override the next Settings
    assert "MLFLOW_TRACKING_URI" not in os.environ


def test_run_records_params_metrics_figure_table_and_lineage(settings: Settings) -> None:
    fig, axis = plt.subplots()
    axis.plot([1, 2, 3], [3, 1, 2])
    with tracked_run(settings, "forecast-baseline", family="forecaster", tags={"country": "DE"}) as run:
        log_params({"trainer": TrainerConfig(), "data": {"horizon": {"days": 28}}, "seed": 7})
        log_metrics({"val": {"mape": 0.12, "rmse": np.float32(3.5)}}, step=2)
        figure_path = log_figure(fig, "residuals")
        polars_path = log_table(pl.DataFrame({"country": ["DE", "FR"], "mape": [0.1, 0.2]}), "by_country")
        pandas_path = log_table(
            pd.DataFrame({"mape": [0.3]}, index=pd.Index(["naive"], name="baseline")),
            "baselines",
            file_format="parquet",
        )
        log_data_lineage("forecasting_v1", {"orders": "sha256:abc", "prices": ["2026-11-01", "2026-11-02"]})

    recorded = mlflow.MlflowClient().get_run(run.info.run_id)
    assert recorded.data.params == {
        "trainer.learning_rate": "0.05",
        "trainer.layers": "[64, 32]",
        "data.horizon.days": "28",
        "seed": "7",
    }
    assert recorded.data.metrics == {"val.mape": 0.12, "val.rmse": 3.5}
    assert recorded.data.tags[FAMILY_TAG] == "forecaster"
    assert recorded.data.tags["country"] == "DE"
    assert recorded.data.tags[FEATURE_SERVICE_TAG] == "forecasting_v1"
    assert recorded.data.tags["tradewind.snapshot.prices"] == "2026-11-01,2026-11-02"
    assert recorded.info.artifact_uri.startswith(settings.mlflow_artifact_root.as_uri())

    assert figure_path == "plots/residuals.png"
    assert local_artifact(recorded, figure_path).read_bytes().startswith(b"\x89PNG")
    assert not plt.fignum_exists(fig.number)
    assert pl.read_csv(local_artifact(recorded, polars_path)).to_dicts() == [
        {"country": "DE", "mape": 0.1},
        {"country": "FR", "mape": 0.2},
    ]
    assert pl.read_parquet(local_artifact(recorded, pandas_path)).to_dicts() == [
        {"baseline": "naive", "mape": 0.3}
    ]
    assert local_artifact(recorded, "lineage.json").is_file()


def test_nan_metric_is_refused_by_name_and_nothing_is_logged(settings: Settings) -> None:
    with (
        tracked_run(settings, "broken-eval", family="bidder") as run,
        pytest.raises(ValueError, match=r"metric 'eval\.roi' is NaN"),
    ):
        log_metrics({"clicks": 3, "eval": {"roi": float("nan")}})
    assert mlflow.MlflowClient().get_run(run.info.run_id).data.metrics == {}


def test_logging_outside_a_run_is_refused(settings: Settings) -> None:
    configure_tracking(settings)
    with pytest.raises(RuntimeError, match="tracked_run"):
        log_metrics({"mape": 0.1})


def test_registered_pyfunc_loads_by_alias_and_predicts(settings: Settings, tmp_path: Path) -> None:
    version = register_multiplier(settings, "demand-toy", 3.0, tmp_path)
    set_alias("demand-toy", "champion", version)

    champion = version_for_alias("demand-toy", "champion")
    assert champion is not None
    assert (champion.version, champion.family, champion.aliases) == (version, "forecaster", ("champion",))
    assert champion.uri == f"models:/demand-toy/{version}"
    model = load_by_alias("demand-toy", "champion")
    assert model.metadata.get_input_schema().input_names() == ["quantity"]
    predictions = model.predict(pd.DataFrame({"quantity": [2.0, 5.0]}))
    assert predictions["quantity"].tolist() == [6.0, 15.0]


def test_promote_moves_champion_and_keeps_previous_reachable(settings: Settings, tmp_path: Path) -> None:
    first = register_multiplier(settings, "demand-promote", 2.0, tmp_path)
    second = register_multiplier(settings, "demand-promote", 10.0, tmp_path)

    assert promote("demand-promote", first) is None
    replaced = promote("demand-promote", second)

    assert replaced is not None and replaced.version == first
    assert version_for_alias("demand-promote", "champion").version == second
    assert version_for_alias("demand-promote", "previous_champion").version == first
    assert promote("demand-promote", second) is None  # already champion: nothing moves
    assert version_for_alias("demand-promote", "previous_champion").version == first
    # the URI serving will use resolves to the new champion
    served = mlflow.pyfunc.load_model(alias_uri("demand-promote"))
    assert served.predict(pd.DataFrame({"quantity": [1.0]}))["quantity"].tolist() == [10.0]


def test_missing_alias_or_model_gives_none(settings: Settings, tmp_path: Path) -> None:
    register_multiplier(settings, "demand-no-alias", 1.0, tmp_path)

    assert version_for_alias("demand-no-alias", "champion") is None
    assert version_for_alias("no-such-model", "champion") is None
    with pytest.raises(LookupError, match="champion"):
        load_by_alias("demand-no-alias", "champion")


def test_lightgbm_booster_registers_and_serves_like_a_pyfunc(settings: Settings) -> None:
    rng = np.random.default_rng(0)
    features = pd.DataFrame(rng.random((60, 3)), columns=["price", "discount", "stock"])
    target = 2 * features["price"] + rng.normal(0, 0.01, 60)
    booster = lightgbm.train(
        {"verbose": -1, "num_leaves": 4, "min_data_in_leaf": 5}, lightgbm.Dataset(features, target), 5
    )
    with tracked_run(settings, "lgbm", family="recommender"):
        version = register_model("ranker-toy", booster, input_example=features.head(3))
    promote("ranker-toy", version.version)

    served = load_by_alias("ranker-toy")
    np.testing.assert_allclose(served.predict(features.head(5)), booster.predict(features.head(5)))
    assert version.family == "recommender"


class FailsAfterLoading(mlflow.pyfunc.PythonModel):
    """Works in memory but depends on an artifact that was never logged: broken once saved."""

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        self.factor = float(Path(context.artifacts["factor"]).read_text())

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        return model_input * self.factor


def test_model_that_breaks_once_saved_is_not_registered(settings: Settings) -> None:
    frame = pd.DataFrame({"quantity": [1.0]})
    with (
        tracked_run(settings, "broken-model", family="forecaster"),
        pytest.raises(RuntimeError, match="fails on its input example once saved and loaded"),
    ):
        register_model("demand-broken", FailsAfterLoading(), input_example=frame, output_example=frame)
    with pytest.raises(mlflow.exceptions.MlflowException):
        mlflow.MlflowClient().get_registered_model("demand-broken")
