"""The synthetic cross-border marketplace: a known world to measure every model against.

`generate_marketplace(config, raw_dir, truth_dir)` writes the raw contract tables (markets, fx_rates,
users, products, listings, promotions, events, campaigns, auctions) with a few dirty rows for the
ingest quarantine, and the ground truth (choice model, true demand, true click and conversion
probabilities, injected dirt) that evaluation reads through `features.simulator.truth`.

Modules: config (the YAML's models), clock and identifiers (times and ids), fx, population (users,
products, listings), traffic (calendar and seasonality), pricing, promotions (and stock-outs),
demand (the choice model and the true demand), events (sessions and the funnel), ad_market
(constants fitted once from iPinYou), campaigns, auctions, dirt, truth (writers and loaders) and
generate (the orchestration).
"""

from features.simulator.config import MarketplaceConfig, load_marketplace_config
from features.simulator.generate import GenerationSummary, generate_marketplace

__all__ = ["GenerationSummary", "MarketplaceConfig", "generate_marketplace", "load_marketplace_config"]
