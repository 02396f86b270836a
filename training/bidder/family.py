"""The bidder as a record of its functions (`training.pipeline.Family`)."""

from __future__ import annotations

from configs.families import BIDDER
from training.bidder.config import BidderConfig
from training.bidder.data import training_set
from training.bidder.evaluate import evaluate
from training.bidder.fit import default_params, fit, search_space
from training.bidder.gate import compare_on_holdout
from training.bidder.monitor import live_check
from training.pipeline import Family

FAMILY = Family(
    names=BIDDER,
    config_model=BidderConfig,
    higher_is_better=True,  # % of the hindsight optimum
    training_set=training_set,
    fit=fit,
    evaluate=evaluate,
    default_params=default_params,
    search_space=search_space,
    compare_on_holdout=compare_on_holdout,
    live_check=live_check,
)
