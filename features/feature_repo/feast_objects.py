"""Module-level Feast objects for the plain `feast` CLI (`feast apply`, `feast feature-views list`).

The CLI imports every Python file in this folder and registers the Feast objects it finds at
module level. They are built by `definitions.build_definitions` over the feature tables of the
configured data folder (`configs/platform.yaml`, or TRADEWIND_DATA_DIR).
"""

from __future__ import annotations

from configs.settings import load_settings
from features.feature_repo.definitions import build_definitions

_CLI_DEFINITIONS = build_definitions(load_settings().feature_dir)

user = _CLI_DEFINITIONS.entities["user"]
product = _CLI_DEFINITIONS.entities["product"]
market = _CLI_DEFINITIONS.entities["market"]
category = _CLI_DEFINITIONS.entities["category"]
campaign = _CLI_DEFINITIONS.entities["campaign"]

user_activity = _CLI_DEFINITIONS.feature_views["user_activity"]
user_category_affinity = _CLI_DEFINITIONS.feature_views["user_category_affinity"]
product_catalog = _CLI_DEFINITIONS.feature_views["product_catalog"]
product_market_popularity = _CLI_DEFINITIONS.feature_views["product_market_popularity"]
product_market_demand = _CLI_DEFINITIONS.feature_views["product_market_demand"]
market_daily = _CLI_DEFINITIONS.feature_views["market_daily"]
campaign_stats = _CLI_DEFINITIONS.feature_views["campaign_stats"]

recommender = _CLI_DEFINITIONS.feature_services["recommender"]
forecaster = _CLI_DEFINITIONS.feature_services["forecaster"]
bidder = _CLI_DEFINITIONS.feature_services["bidder"]
