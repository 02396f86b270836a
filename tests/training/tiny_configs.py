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
