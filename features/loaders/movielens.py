"""MovieLens 100K (GroupLens, 1998) as raw contract tables.

Source: the `ml-100k` folder; `u.data` (user, item, rating 1-5, unix time; tab separated),
`u.item` (item | title | release date | video date | IMDb URL | 19 genre flags; latin-1),
`u.user` (user | age | gender | occupation | zip) and `u.genre` (genre names in flag order).

Mapping (ids carry the prefix `ml-` so they cannot collide with another data set's ids):
- markets: one, "US" (from `countries.COUNTRIES`); every user is in it.
- users: every line of u.user (`ml-196`); signup_ts = the user's first rating, since the data has
  no sign-up time. Demographics are not part of the contract and are not written.
- products: every movie of u.item (`ml-242`); title as written ("unknown", the placeholder of
  item 267, becomes null); category = the first genre flagged, in u.genre order ("unknown" when none
  is); brand "MovieLens"; no price or currency; created_ts = the movie's first rating.
- events: every rating as an implicit "purchase" interaction (the usual top-k reading of explicit
  ratings): event_id `ml-<user>-<item>` (a user rates a movie at most once), quantity 1, no price or
  currency, channel "web", event_ts from the unix time (UTC).
- side table `movielens_ratings/<partition>.parquet` (user_id, product_id, rating, event_ts): the
  rating itself, which the contract has no column for, for benchmarks that need explicit ratings.
  Ingest does not read it; it lives beside the raw tables in raw_dir.
- fx_rates: USD, every day from the first to the last rating.
Nothing is flagged: the release has no rows a contract rule or this loader would reject.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from features.loaders.countries import markets_frame
from features.loaders.fx import daily_fx_rates
from features.loaders.raw import LoadSummary, RawOutput, folder_with

DATASET = "movielens-100k"
RATINGS_TABLE = "movielens_ratings"
REQUIRED_FILES = ("u.data", "u.item", "u.user", "u.genre")
MARKET = "US"
ID_PREFIX = "ml-"
BRAND = "MovieLens"
ITEM_FIXED_FIELDS = ("item", "title", "release_date", "video_release_date", "imdb_url")
UNKNOWN_TITLE = "unknown"


def find_source(source: Path) -> Path:
    """The ml-100k folder: `source` itself, or the folder of one of its files."""
    return folder_with(source, REQUIRED_FILES, "a MovieLens 100K folder")


def _read_pipe_file(path: Path, columns: list[str]) -> pl.DataFrame:
    """The release's `|`-separated files: latin-1 text, no header, no quoting."""
    text = path.read_bytes().decode("latin-1")
    return pl.read_csv(
        text.encode(),
        separator="|",
        has_header=False,
        new_columns=columns,
        quote_char=None,
        infer_schema=False,
    )


def read_ratings(folder: Path) -> pl.DataFrame:
    return pl.read_csv(
        folder / "u.data",
        separator="\t",
        has_header=False,
        new_columns=["user", "item", "rating", "timestamp"],
        schema_overrides={"user": pl.Int64, "item": pl.Int64, "rating": pl.Int64, "timestamp": pl.Int64},
    ).with_columns(
        user_id=pl.lit(ID_PREFIX) + pl.col("user").cast(pl.String),
        product_id=pl.lit(ID_PREFIX) + pl.col("item").cast(pl.String),
        event_ts=pl.from_epoch("timestamp", time_unit="s").dt.replace_time_zone("UTC"),
    )


def read_genres(folder: Path) -> list[str]:
    genres = _read_pipe_file(folder / "u.genre", ["genre", "index"]).filter(pl.col("genre") != "")
    return genres.sort(pl.col("index").cast(pl.Int64)).get_column("genre").to_list()


def build_products(folder: Path, ratings: pl.DataFrame) -> pl.DataFrame:
    genres = read_genres(folder)
    items = _read_pipe_file(folder / "u.item", [*ITEM_FIXED_FIELDS, *genres])
    first_genre = pl.coalesce([pl.when(pl.col(genre) == "1").then(pl.lit(genre)) for genre in genres])
    first_rating = ratings.group_by("product_id").agg(created_ts=pl.col("event_ts").min())
    return items.select(
        (pl.lit(ID_PREFIX) + pl.col("item")).alias("product_id"),
        pl.when(pl.col("title") != UNKNOWN_TITLE).then(pl.col("title")).alias("title"),
        first_genre.fill_null("unknown").alias("category"),
        pl.lit(BRAND).alias("brand"),
        pl.lit(None, dtype=pl.Float64).alias("price"),
        pl.lit(None, dtype=pl.String).alias("currency"),
    ).join(first_rating, on="product_id", how="left")


def build_users(folder: Path, ratings: pl.DataFrame) -> pl.DataFrame:
    users = _read_pipe_file(folder / "u.user", ["user", "age", "gender", "occupation", "zip"])
    first_rating = ratings.group_by("user_id").agg(signup_ts=pl.col("event_ts").min())
    return users.select(
        (pl.lit(ID_PREFIX) + pl.col("user")).alias("user_id"), pl.lit(MARKET).alias("market_id")
    ).join(first_rating, on="user_id", how="left")


def build_events(ratings: pl.DataFrame) -> pl.DataFrame:
    return ratings.select(
        (pl.col("user_id") + "-" + pl.col("item").cast(pl.String)).alias("event_id"),
        "event_ts",
        "user_id",
        "product_id",
        pl.lit(MARKET).alias("market_id"),
        pl.lit("purchase").alias("event_type"),
        pl.lit(1).alias("quantity"),
        pl.lit(None, dtype=pl.Float64).alias("price"),
        pl.lit(None, dtype=pl.String).alias("currency"),
        pl.lit("web").alias("channel"),
    )


def load(source: Path, raw_dir: Path) -> LoadSummary:
    """Read MovieLens 100K (its folder, or any file in it) and write its raw tables under raw_dir."""
    folder = find_source(source)
    ratings = read_ratings(folder)
    markets = markets_frame([MARKET])
    days = ratings.get_column("event_ts").dt.date()

    output = RawOutput(DATASET, raw_dir)
    output.write(
        "fx_rates", daily_fx_rates(markets.get_column("currency"), days.min(), days.max(), days.min().year)
    )
    output.write("markets", markets)
    output.write("users", build_users(folder, ratings))
    output.write("products", build_products(folder, ratings))
    output.write("events", build_events(ratings))
    output.write_side_table(
        RATINGS_TABLE, ratings.select("user_id", "product_id", "rating", "event_ts"), partition=DATASET
    )
    return output.summary(source_rows=ratings.height)
