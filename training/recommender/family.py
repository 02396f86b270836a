"""The recommender family as the record the training flow, retraining, monitoring and the CLI read."""

from __future__ import annotations

from configs.families import RECOMMENDER
from training.pipeline import Family
from training.recommender.config import RecommenderConfig
from training.recommender.data import training_set
from training.recommender.evaluate import evaluate
from training.recommender.fit import default_params, fit, search_space
from training.recommender.gate import compare_on_holdout
from training.recommender.monitor import live_check

FAMILY = Family(
    names=RECOMMENDER,
    config_model=RecommenderConfig,
    higher_is_better=True,
    training_set=training_set,
    fit=fit,
    evaluate=evaluate,
    default_params=default_params,
    search_space=search_space,
    compare_on_holdout=compare_on_holdout,
    live_check=live_check,
)
