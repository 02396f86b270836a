"""The shared train/tune flow, on a toy family: a least-squares line whose error we know."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import mlflow
import numpy as np
import optuna
import pandas as pd
import pytest

from configs import StrictModel
from configs.settings import MlflowSettings, Settings
from tracking.registry import CHALLENGER, CHAMPION, load_by_alias, version_for_alias
from tracking.runs import FEATURE_SERVICE_TAG, tracking_client
from training.pipeline import (
    Evaluation,
    Reporter,
    TrainedModel,
    TrainingSet,
    best_tuned_params,
    train,
    tune,
)


class LineConfig(StrictModel):
    points: int = 40
    noise: float = 0.1


class Line(mlflow.pyfunc.PythonModel):
    def __init__(self, slope: float) -> None:
        self.slope = slope

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> pd.DataFrame:
        return pd.DataFrame({"y": model_input["x"] * self.slope})


class LineFamily:
    """Fits y = slope * x by shrunk least squares; `shrink` is the hyperparameter tuned."""

    name = "forecaster"  # a known family tag; the registered model below is the toy\'s own
    registered_model = "tradewind-test-line"
    config_name = "unused"
    config_model = LineConfig
    higher_is_better = False

    feature_service = "forecaster"

    def training_set(self, settings: Settings, config: LineConfig) -> TrainingSet:
        rng = np.random.default_rng(0)
        x = rng.uniform(0, 1, config.points)
        y = 3.0 * x + rng.normal(0, config.noise, config.points)
        return TrainingSet((x, y), lineage={"events": "sha256:test"}, summary={"rows": config.points})

    def fit(
        self,
        training_set: TrainingSet,
        config: LineConfig,
        params: Mapping[str, Any],
        report: Reporter | None,
    ) -> TrainedModel:
        x, y = training_set.data
        slope = float(x @ y / (x @ x)) * (1 - params["shrink"])
        if report is not None:
            for step in range(3):
                report(step, abs(slope - 3.0))
        example = pd.DataFrame({"x": [0.5, 1.0]})
        return TrainedModel(Line(slope), example, learning_curve={"error": [1.0, 0.5, abs(slope - 3.0)]})

    def evaluate(self, trained: TrainedModel, training_set: TrainingSet, config: LineConfig) -> Evaluation:
        x, y = training_set.data
        error = float(np.mean(np.abs(trained.python_model.slope * x - y)))
        figure = plt.figure()
        plt.plot(x, y, ".")
        return Evaluation({"line": {"mae": error}}, "line.mae", False, figures={"fit": figure})

    def default_params(self, config: LineConfig) -> dict[str, Any]:
        return {"shrink": 0.5}

    def search_space(self, trial: optuna.Trial, config: LineConfig) -> dict[str, Any]:
        return {"shrink": trial.suggest_float("shrink", 0.0, 0.9)}


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "data", mlflow=MlflowSettings(tracking_uri=f"sqlite:///{tmp_path}/m.db")
    )


def test_first_version_becomes_champion_and_later_ones_challengers(settings: Settings) -> None:
    family = LineFamily()
    first = train(settings, family, LineConfig())
    second = train(settings, family, LineConfig(), params={"shrink": 0.0})
    assert first.aliases == (CHAMPION,) and second.aliases == (CHALLENGER,)
    assert version_for_alias(family.registered_model, CHAMPION).version == first.version.version
    assert version_for_alias(family.registered_model, CHALLENGER).version == second.version.version
    # unshrunk least squares is closer to the truth than the default's half slope
    assert second.evaluation.primary < first.evaluation.primary

    run = tracking_client().get_run(first.run_id)
    assert run.data.params["params.shrink"] == "0.5"
    assert run.data.tags[FEATURE_SERVICE_TAG] == "forecaster"
    assert run.data.metrics["line.mae"] == pytest.approx(first.evaluation.primary)
    assert run.data.metrics["training_set.rows"] == 40
    history = tracking_client().get_metric_history(first.run_id, "learning_curve.error")
    assert [m.step for m in history] == [0, 1, 2]
    artifacts = [a.path for a in tracking_client().list_artifacts(first.run_id, "plots")]
    assert artifacts == ["plots/fit.png"]

    served = load_by_alias(family.registered_model).predict(pd.DataFrame({"x": [2.0]}))
    # the default halves the least-squares slope (about 3): about 1.5 * 2
    assert served["y"].iloc[0] == pytest.approx(3.0, rel=0.1)


def test_promote_always_moves_the_champion(settings: Settings) -> None:
    family = LineFamily()
    train(settings, family, LineConfig())
    second = train(settings, family, LineConfig(), promote_policy="always")
    assert version_for_alias(family.registered_model, CHAMPION).version == second.version.version


def test_tuning_resumes_its_study_and_trains_with_the_best_trial(settings: Settings) -> None:
    family = LineFamily()
    with pytest.raises(LookupError, match="tradewind tune forecaster"):
        best_tuned_params(settings, family)
    first = tune(settings, family, 3, LineConfig())
    again = tune(settings, family, 3, LineConfig())
    assert (first.trials_total, again.trials_total) == (3, 6)
    assert again.best_value <= first.best_value

    client = tracking_client()
    parent = client.get_run(again.parent_run_id)
    children = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{again.parent_run_id}'"
    )
    assert len(children) == 3
    assert {run.data.params["params.shrink"] for run in children}.isdisjoint(
        {str(first.best_params["shrink"])}
    ), "a resumed study replayed the first session's suggestions"
    assert parent.data.metrics["trials"] == 6
    # the toy family has no validation split: its trials say they were scored on the holdout
    completed = [run for run in children if run.data.tags.get("optuna.state") != "pruned"]
    assert completed and {run.data.tags["tradewind.tuned_on"] for run in completed} == {"holdout"}
    tuned = train(settings, family, LineConfig(), use_tuned=True)
    assert tuned.params["shrink"] == pytest.approx(again.best_params["shrink"])


def test_tuning_refuses_zero_trials(settings: Settings) -> None:
    with pytest.raises(ValueError, match="--trials"):
        tune(settings, LineFamily(), 0, LineConfig())
