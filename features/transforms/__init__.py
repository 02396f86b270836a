"""Feature tables for Feast, computed with polars from the contract tables.

Tables (one parquet file per Feast feature view, `<feature_dir>/<view>.parquet`; columns and
meanings in `specs.py`):
- `user_activity` (user): home market and 7/30/90-day views, carts, purchases, USD spend,
  distinct categories, days since the last purchase, price level paid relative to the market.
- `user_category_affinity` (user x category, weekly): 30/90-day interactions and purchases in a
  category and their share of the user's total. One row per user and category rather than top-k
  columns: a ranker scores (user, product) pairs and joins the candidate's category directly.
- `product_catalog` (product): category, brand, number of markets listed.
- `product_market_popularity` (product x market): 7/30-day views, carts, purchases, units,
  conversion, and list/promotion/local/USD price.
- `product_market_demand` (product x market): units lags 1/7/14/28 and means 7/28 with price and
  promotion of the target day, for online forecasting.
- `market_daily` (market): activity and the currency rate.
- `campaign_stats` (campaign): 1/7-day auctions, win rate, CTR, CVR, market price, spend.

Timestamps. A row describes a whole day D and is stamped (`event_timestamp`) at the end of D:
midnight UTC for users, the market's local midnight (in UTC) for market-bound entities, whose
promotions and sales are dated in local days. A row uses only events before that instant, so a
point-in-time join at time t sees the last complete day before t. Demand and popularity rows
also describe the target day D + 1 where it is known in advance (planned promotions, price).
`created_timestamp` is the build time; of two rows with one timestamp, the later build wins.

Cadence. Values are evaluated daily (affinity weekly, on Sundays) while an entity is alive: from
its first event until its longest window is empty again, so its last row holds zeros. A row is
written only when some value differs from the entity's previous row. Every row therefore holds
until the entity's next row, and the feature views have no TTL: a TTL would turn those correct
zeros into missing values. Quiet entities write nothing; what drives the size is values that
move daily while an entity is active: recency for users, the USD price (exchange rate) for
listings. Dormant listings keep the USD price of their last row. Markets are evaluated every day.

Size and speed, fake marketplace of 5k users x 730 days, 3.65M events, 2.2M auctions, 7k
listings (`python -m benchmarks.feature_store_bench`): ~2.9M user_activity rows, 4.5M affinity,
5.0M popularity, 2.1M demand; the full build takes 100-140 s on 2 busy cores (polars, peak 3.5 GB).
Windows are running totals read with as-of joins on integer entity codes (`windows.py`).

Memory. The per entity x day grids grow with users x days (a 10x world's user grid alone holds
~35M user-days), so the user and product x market tables are computed in parts of
`build.KEYS_PER_PART` entities, each written to disk, then merged into one file in time order a
slice of time at a time. Every value depends on its own entity's rows only, so the rows are the
same for any part size.
"""

from features.transforms.build import build_feature_tables, feature_table_path
from features.transforms.specs import FEATURE_TABLES, FeatureTableSpec

__all__ = ["FEATURE_TABLES", "FeatureTableSpec", "build_feature_tables", "feature_table_path"]
