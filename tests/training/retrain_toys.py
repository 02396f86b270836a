"""A toy family for the retraining tests: a line y = slope * x whose holdout error we know.

Importable by name (tests/training is on sys.path when pytest collects it), and runnable as a script,
so a test can start a real retrain in a process of its own and kill it mid-way:
`python retrain_toys.py DATA_DIR TRACKING_URI [--block-in-fit FILE]`.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd

from configs import StrictModel
from training.pipeline import Evaluation, HoldoutComparison, Reporter, TrainedModel, TrainingSet

TRUE_SLOPE = 3.0


class LineConfig(StrictModel):
    points: int = 60
    noise: float = 0.1
    block_in_fit: str | None = None  # fit waits while this file exists: a test kills the process then


class Line(mlflow.pyfunc.PythonModel):
    def __init__(self, slope: float, nan_from: float | None = None, answer_seconds: float = 0.0) -> None:
        self.slope = slope
        self.nan_from = nan_from  # a broken model: NaN for x at or past this (the holdout stays below 1)
        self.answer_seconds = answer_seconds  # a slow model: each answer takes this long

    def answer(self, request: dict, online: dict | None = None) -> dict:
        if self.answer_seconds:
            time.sleep(self.answer_seconds)
        x = float(request["x"])
        return {"y": float("nan") if self.nan_from is not None and x >= self.nan_from else x * self.slope}

    def smoke_request(self) -> dict:
        return {"x": 1.0}

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> pd.DataFrame:
        return pd.DataFrame({"y": model_input["x"] * self.slope})


class LineFamily:
    """Fits y = slope * x by shrunk least squares: `shrink` 0 is the best a line can do, 0.9 bad."""

    name = "forecaster"  # a known family tag; the registered model below is the toy\'s own
    registered_model = "tradewind-test-retrain-line"
    config_name = "unused"
    config_model = LineConfig
    higher_is_better = False

    feature_service = "forecaster"

    def training_set(self, settings: Any, config: LineConfig) -> TrainingSet:
        rng = np.random.default_rng(0)
        x = rng.uniform(0, 1, config.points)
        y = TRUE_SLOPE * x + rng.normal(0, config.noise, config.points)
        cut = config.points * 2 // 3  # the last third is the holdout
        return TrainingSet((x[:cut], y[:cut], x[cut:], y[cut:]), lineage={"events": "sha256:toy"})

    def fit(
        self,
        training_set: TrainingSet,
        config: LineConfig,
        params: Mapping[str, Any],
        report: Reporter | None,
    ) -> TrainedModel:
        if config.block_in_fit:
            flag = Path(config.block_in_fit)
            flag.with_suffix(".fitting").touch()  # tells the test the run is in its train step
            while flag.exists():
                time.sleep(0.05)
        x, y, _, _ = training_set.data
        slope = float(x @ y / (x @ x)) * (1 - params["shrink"])
        if params.get("nan"):
            slope = float("nan")
        line = Line(slope, params.get("nan_from"), params.get("answer_seconds", 0.0))
        return TrainedModel(line, pd.DataFrame({"x": [0.5, 1.0]}))

    def evaluate(self, trained: TrainedModel, training_set: TrainingSet, config: LineConfig) -> Evaluation:
        return Evaluation({"mae": holdout_mae(trained.python_model, training_set)}, "mae", False)

    def default_params(self, config: LineConfig) -> dict[str, Any]:
        return {"shrink": 0.0}

    def search_space(self, trial: Any, config: LineConfig) -> dict[str, Any]:
        return {"shrink": trial.suggest_float("shrink", 0.0, 0.9)}

    def compare_on_holdout(
        self,
        champion: Line,
        challenger: Line,
        challenger_params: Mapping[str, Any],
        training_set: TrainingSet,
        config: LineConfig,
    ) -> HoldoutComparison:
        return HoldoutComparison(
            "mae",
            False,
            holdout_mae(champion, training_set),
            holdout_mae(challenger, training_set),
            f"the last {len(training_set.data[2])} points",
        )


def holdout_mae(model: Line, training_set: TrainingSet) -> float:
    _, _, x, y = training_set.data
    return float(
        np.mean([abs(model.answer({"x": value})["y"] - target) for value, target in zip(x, y, strict=True)])
    )


if __name__ == "__main__":
    from configs.settings import MlflowSettings, Settings
    from training.retrain import retrain

    data_dir, tracking_uri, *rest = sys.argv[1:]
    block = rest[1] if rest[:1] == ["--block-in-fit"] else None
    settings = Settings(data_dir=Path(data_dir), mlflow=MlflowSettings(tracking_uri=tracking_uri))
    result = retrain(settings, LineFamily(), config=LineConfig(block_in_fit=block), params={"shrink": 0.0})
    print(result.decision)
