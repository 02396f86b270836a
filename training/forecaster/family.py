"""The forecaster as a record of its functions (`training.pipeline.Family`)."""

from __future__ import annotations

from configs.families import FORECASTER
from training.forecaster.config import ForecasterConfig
from training.forecaster.data import training_set
from training.forecaster.evaluate import evaluate
from training.forecaster.fit import default_params, fit, search_space
from training.forecaster.gate import compare_on_holdout
from training.forecaster.monitor import live_check
from training.pipeline import Family

FAMILY = Family(
    names=FORECASTER,
    config_model=ForecasterConfig,
    higher_is_better=False,  # MASE
    training_set=training_set,
    fit=fit,
    evaluate=evaluate,  # type: ignore[arg-type]  # reads the ForecasterTrained that fit returns
    default_params=default_params,
    search_space=search_space,
    compare_on_holdout=compare_on_holdout,
    live_check=live_check,
)
