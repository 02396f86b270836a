"""Family configs shrunk for the tests: tiny and single-threaded (the test machine's cores are
shared). One copy each, for every test module that trains the family."""

from __future__ import annotations

# the forecaster: 12 LightGBM series, 3 folds, 40 rounds; Prophet stays off (its default)
TINY_FORECASTER = {
    "horizon": 14,
    "series": {"top_n": 12, "min_active_days": 14},
    "backtest": {"folds": 3},
    "lightgbm": {"num_boost_round": 40, "early_stopping_rounds": 5, "num_threads": 1},
    "oracle_draws": 100,
    "holiday_plot": {"series": 1},
}

# the bidder: small enough for seconds, large enough that every part runs: 3 held-out days, a short DQN
TINY_BIDDER = {
    "data": {"test_days": 3, "train_days": 8, "click_model_days": 60, "min_train_days": 4},
    "click_model": {"n_estimators": 30, "min_child_samples": 50},
    "dqn": {
        "episodes": 20,
        "hidden_size": 16,
        "batch_size": 32,
        "updates_per_episode": 2,
        "validation_every": 10,
        "validation_episodes": 2,
        "n_steps": 12,
    },
    "evaluation": {"tuning_grid_size": 10},
}

# the recommender: the shipped config with 20 candidates per retriever, 20 trees, 300 label users
TINY_RECOMMENDER = {
    "retrieval": {"candidates_per_retriever": 20},
    "ranker": {"n_estimators": 20, "report_every": 5, "min_child_samples": 10},
    "data": {"max_label_users": 300},
    "evaluation": {"curve_max_k": 20},
}


def tiny_recommender_config(**sections: dict) -> object:
    """The shipped recommender config with TINY_RECOMMENDER's values, then `sections`' (merged
    key by key, nested sections too)."""
    from configs import load_config, validate_config
    from training.recommender.config import RecommenderConfig

    config = load_config("recommender", RecommenderConfig).model_dump()
    return validate_config(
        merged(merged(config, TINY_RECOMMENDER), sections), RecommenderConfig, "tiny recommender config"
    )


def merged(base: dict, overrides: dict) -> dict:
    """`base` with `overrides` laid over it, nested dicts merged rather than replaced."""
    result = dict(base)
    for key, value in overrides.items():
        both_dicts = isinstance(value, dict) and isinstance(result.get(key), dict)
        result[key] = merged(result[key], value) if both_dicts else value
    return result
