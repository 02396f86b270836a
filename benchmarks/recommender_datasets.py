"""The recommender benchmark's data sets, each cut for its protocol with a validation split cut the
same way from its training part (see `benchmarks/recommender.py`): MovieLens 100K and UCI Online
Retail through the project's loaders and the data contract, and any interactions file
(`--dataset FILE`)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl

from benchmarks.data_files import parse_date_column, read_data_file
from configs import InputError
from models.recommendation.interactions import Interactions
from training.evaluation.ranking import per_user_random_split, temporal_split

TEST_DAYS = 30  # Online Retail: the test period is the last 30 days


@dataclass
class BenchmarkCase:
    """A data set cut for one protocol, with a validation split cut the same way from its train."""

    dataset: str
    protocol: str
    train: Interactions
    test: Interactions
    validation_train: Interactions
    validation: Interactions
    user_market: np.ndarray | None = None  # market label per user index, where known
    segments: dict[str, np.ndarray] = field(default_factory=dict)
    temporal: bool = False


def contract_tables(dataset: str, source: Path, workspace: Path) -> dict[str, pl.DataFrame]:
    """Load a real data set with its loader, ingest it against the contract into `workspace`, and
    return the accepted events, users and products."""
    from configs.settings import Settings
    from features.ingest import ingest
    from features.loaders import DATASETS
    from features.tables import read_table

    settings = Settings(data_dir=workspace)
    DATASETS[dataset](source, settings.raw_dir)
    report = ingest(settings, settings.raw_dir, progress=False)
    quarantined = {result.table: result.quarantined for result in report.results if result.quarantined}
    print(f"{dataset}: ingested into {workspace} (quarantined rows per table: {quarantined or 'none'})")
    return {name: read_table(settings.contract_dir, name) for name in ("events", "users", "products")}


def movielens_case(folder: Path, workspace: Path) -> BenchmarkCase:
    """Every rating an interaction (the contract's events), per-user random 75/25 split, seed 42."""
    from features.loaders.movielens import ID_PREFIX

    events = contract_tables("movielens-100k", folder, workspace)["events"].select(
        pl.col("user_id").str.strip_prefix(ID_PREFIX).cast(pl.Int64),
        pl.col("product_id").str.strip_prefix(ID_PREFIX).cast(pl.Int64).alias("item_id"),
        pl.col("event_ts").alias("timestamp"),
    )
    interactions = Interactions.from_events(events, time_col="timestamp")
    interactions = _with_side_features(
        interactions, _movielens_user_features(folder), _movielens_item_features(folder)
    )
    train, test = per_user_random_split(interactions)
    validation_train, validation = per_user_random_split(train)
    return BenchmarkCase("movielens-100k", "random 75/25", train, test, validation_train, validation)


def _movielens_user_features(folder: Path) -> dict[int, np.ndarray]:
    rows = [line.split("|") for line in (folder / "u.user").read_text(encoding="latin-1").splitlines()]
    occupations = sorted({row[3] for row in rows})
    features = {}
    for user_id, age, gender, occupation, _zip in rows:
        one_hot = np.zeros(len(occupations), dtype=np.float32)
        one_hot[occupations.index(occupation)] = 1.0
        features[int(user_id)] = np.concatenate([[int(age) / 50.0, float(gender == "F")], one_hot])
    return features


def _movielens_item_features(folder: Path) -> dict[int, np.ndarray]:
    features = {}
    for line in (folder / "u.item").read_text(encoding="latin-1").splitlines():
        fields = line.split("|")
        year = re.search(r"(\d{4})$", fields[2])
        age = (1998 - int(year.group(1))) / 20.0 if year else 0.0
        features[int(fields[0])] = np.array([age, *map(float, fields[5:24])], dtype=np.float32)
    return features


def load_online_retail(source: Path, workspace: Path) -> pl.DataFrame:
    """Accepted purchases of the contract's Online Retail events (the loader flags cancellations,
    missing customers, non-product codes and duplicate lines; ingest quarantines them and zero
    prices): user_id, item_id, timestamp, quantity, price, description, country (the market)."""
    tables = contract_tables("online-retail", source, workspace)
    titles = tables["products"].select(
        pl.col("product_id"), pl.col("title").fill_null("").alias("description")
    )
    return (
        tables["events"]
        .join(titles, on="product_id", how="left")
        .select(
            pl.col("user_id"),
            pl.col("product_id").alias("item_id"),
            pl.col("event_ts").alias("timestamp"),
            pl.col("quantity"),
            pl.col("price"),
            pl.col("description").fill_null(""),
            pl.col("market_id").alias("country"),
        )
        .sort("timestamp")
    )


def online_retail_case(source: Path, workspace: Path, test_days: int = TEST_DAYS) -> BenchmarkCase:
    events = load_online_retail(source, workspace)
    end = events["timestamp"].max()
    cutoff = _midnight(end - timedelta(days=test_days))
    train, test = temporal_split(events, cutoff)
    validation_train, validation = temporal_split(
        events.filter(pl.col("timestamp") < cutoff),
        _midnight(cutoff - timedelta(days=test_days)),
        user_ids=train.user_ids,
        item_ids=train.item_ids,
    )
    # the customer's country is the market; a customer with orders in several keeps the most frequent
    countries = (
        events.group_by("user_id", "country")
        .len()
        .sort("len", "country", descending=[True, False])
        .unique("user_id", keep="first")
    )
    market = dict(zip(countries["user_id"].to_list(), countries["country"].to_list(), strict=True))
    user_features, item_features = _online_retail_features(events.filter(pl.col("timestamp") < cutoff))
    train, test = (_with_side_features(part, user_features, item_features) for part in (train, test))
    validation_train = _with_side_features(validation_train, user_features, item_features)
    user_market = np.array([market[user] for user in train.user_ids.tolist()], dtype=object)
    return BenchmarkCase(
        "online-retail",
        f"temporal, test from {cutoff:%Y-%m-%d}",
        train,
        test,
        validation_train,
        validation,
        user_market=user_market,
        segments={"market": _top_labels(user_market, 5)},
        temporal=True,
    )


def _online_retail_features(
    train_events: pl.DataFrame,
) -> tuple[dict[int, np.ndarray], dict[str, np.ndarray]]:
    """Country one-hot per customer; log price and description words per product (training part only)."""
    top_countries = train_events["country"].value_counts(sort=True)["country"].head(10).to_list()
    countries = train_events.group_by("user_id").agg(pl.col("country").mode().first())
    user_features = {
        user: np.array([float(country == top) for top in top_countries], dtype=np.float32)
        for user, country in countries.iter_rows()
    }
    products = train_events.group_by("item_id").agg(
        pl.col("price").median(), pl.col("description").mode().first()
    )
    words = products.select(
        pl.col("description").str.to_uppercase().str.extract_all(r"[A-Z]{3,}").alias("word")
    ).explode("word")
    vocabulary = words["word"].drop_nulls().value_counts(sort=True)["word"].head(200).to_list()
    word_index = {word: i for i, word in enumerate(vocabulary)}
    item_features = {}
    for item, price, description in products.iter_rows():
        vector = np.zeros(len(vocabulary) + 1, dtype=np.float32)
        vector[0] = np.log1p(price)
        for word in re.findall(r"[A-Z]{3,}", (description or "").upper()):
            if word in word_index:
                vector[1 + word_index[word]] = 1.0
        item_features[item] = vector
    return user_features, item_features


def interactions_file_case(
    path: Path,
    user_col: str,
    item_col: str,
    time_col: str,
    weight_col: str | None = None,
    date_format: str | None = None,
) -> BenchmarkCase:
    """Any event file: the last 10% of time is the test period (global cut-off). The time column
    holds ISO datetimes, numbers (epoch seconds) or text in `date_format`."""
    events = read_data_file(path, time_col, date_format)
    for flag, column in (
        ("--user-col", user_col),
        ("--item-col", item_col),
        ("--time-col", time_col),
        ("--weight-col", weight_col),
    ):
        if column is not None and column not in events.columns:
            raise InputError(
                f"{path}: no column {column!r} ({flag}); the file has: {', '.join(events.columns)}"
            )
    if events.is_empty():
        raise InputError(f"{path}: no interactions")
    events = parse_date_column(events, path, time_col, date_format, flag="--time-col", dtype=pl.Datetime)
    times = events[time_col].sort()
    cutoff = times[int(len(times) * 0.9)]
    validation_cutoff = times[int(len(times) * 0.8)]
    kwargs = dict(user_col=user_col, item_col=item_col, time_col=time_col, weight_col=weight_col)
    train, test = temporal_split(events, cutoff, **kwargs)
    validation_train, validation = temporal_split(
        events.filter(pl.col(time_col) < cutoff),
        validation_cutoff,
        user_ids=train.user_ids,
        item_ids=train.item_ids,
        **kwargs,
    )
    return BenchmarkCase(
        path.stem, f"temporal, test from {cutoff}", train, test, validation_train, validation, temporal=True
    )


def _with_side_features(interactions: Interactions, user_features: dict, item_features: dict) -> Interactions:
    def stack(ids: np.ndarray, features: dict) -> np.ndarray:
        width = len(next(iter(features.values())))
        zero = np.zeros(width, dtype=np.float32)
        return np.stack([features.get(key, zero) for key in ids.tolist()]).astype(np.float32)

    return replace(
        interactions,
        user_features=stack(interactions.user_ids, user_features),
        item_features=stack(interactions.item_ids, item_features),
    )


def _midnight(moment: datetime) -> datetime:
    return moment.replace(hour=0, minute=0, second=0, microsecond=0)


def _top_labels(labels: np.ndarray, keep: int) -> np.ndarray:
    values, counts = np.unique(labels, return_counts=True)
    top = set(values[np.argsort(-counts)[:keep]].tolist())
    return np.array([label if label in top else "other" for label in labels.tolist()], dtype=object)
