"""The user x item interaction matrix every recommender is fitted on.

One `Interactions` holds a CSR matrix (users in rows, items in columns, implicit feedback with
optional weights), the id <-> index maps, the last time each (user, item) pair was seen, and
optional dense side features. Train and test sets built from the same events share the same
maps, so a row index means the same user in both; a user with an empty training row is a
cold-start user.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import polars as pl
import scipy.sparse as sp


@dataclass(frozen=True)
class Interactions:
    matrix: sp.csr_matrix  # users x items, float32; 1.0 for a plain implicit interaction
    user_ids: np.ndarray  # row index -> user id
    item_ids: np.ndarray  # column index -> item id
    # seconds since the epoch of the latest interaction, aligned with `matrix.data`
    last_seen: np.ndarray | None = None
    user_features: np.ndarray | None = None  # users x d_user, float32
    item_features: np.ndarray | None = None  # items x d_item, float32
    user_index: dict = field(init=False, repr=False, compare=False)
    item_index: dict = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        matrix = sp.csr_matrix(self.matrix, dtype=np.float32)
        # canonical form: sorted column indices, no duplicates, so `last_seen` can stay aligned
        if not matrix.has_canonical_format:
            if self.last_seen is not None:
                raise ValueError("last_seen needs a matrix in canonical CSR format (sorted, no duplicates)")
            matrix.sum_duplicates()
        object.__setattr__(self, "matrix", matrix)
        if matrix.shape != (len(self.user_ids), len(self.item_ids)):
            raise ValueError(
                f"matrix shape {matrix.shape} does not match {len(self.user_ids)} users x "
                f"{len(self.item_ids)} items"
            )
        if self.last_seen is not None and len(self.last_seen) != matrix.nnz:
            raise ValueError("last_seen must have one value per stored interaction")
        for name, features, rows in (
            ("user_features", self.user_features, self.n_users),
            ("item_features", self.item_features, self.n_items),
        ):
            if features is not None and features.shape[0] != rows:
                raise ValueError(f"{name} has {features.shape[0]} rows, expected {rows}")
        object.__setattr__(self, "user_index", {user: i for i, user in enumerate(self.user_ids.tolist())})
        object.__setattr__(self, "item_index", {item: i for i, item in enumerate(self.item_ids.tolist())})

    @property
    def n_users(self) -> int:
        return self.matrix.shape[0]

    @property
    def n_items(self) -> int:
        return self.matrix.shape[1]

    @property
    def nnz(self) -> int:
        return self.matrix.nnz

    def user_rows(self) -> np.ndarray:
        """Row index of every stored interaction, aligned with `matrix.data`."""
        return np.repeat(np.arange(self.n_users), np.diff(self.matrix.indptr))

    def items_of(self, user_idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(position in user_idx, item index) of every stored interaction of the given users.

        Reads the CSR arrays directly: much cheaper than slicing the sparse matrix for one user.
        """
        starts, ends = self.matrix.indptr[user_idx], self.matrix.indptr[np.asarray(user_idx) + 1]
        lengths = ends - starts
        positions = np.repeat(np.arange(len(starts)), lengths)
        offsets = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        return positions, self.matrix.indices[np.repeat(starts, lengths) + offsets]

    def history_counts(self) -> np.ndarray:
        """Number of distinct items per user."""
        return np.diff(self.matrix.indptr)

    def binary(self) -> sp.csr_matrix:
        """The matrix with every stored weight set to 1."""
        ones = self.matrix.copy()
        ones.data = np.ones_like(ones.data)
        return ones

    def subset(self, keep: np.ndarray) -> Interactions:
        """Keep the stored interactions where `keep` (aligned with `matrix.data`) is true.

        Users and items stay, with the same indices, even when all their interactions are dropped.
        """
        keep = np.asarray(keep, dtype=bool)
        if keep.shape != (self.nnz,):
            raise ValueError(f"keep must have one flag per stored interaction ({self.nnz})")
        rows = self.user_rows()[keep]
        matrix = sp.csr_matrix(
            (self.matrix.data[keep], (rows, self.matrix.indices[keep])), shape=self.matrix.shape
        )
        # the kept entries come out in the same (row, column) order, so last_seen stays aligned
        last_seen = None if self.last_seen is None else self.last_seen[keep]
        return replace(self, matrix=matrix, last_seen=last_seen)

    def split_per_user(self, test_fraction: float, seed: int) -> tuple[Interactions, Interactions]:
        """Each user's interactions shuffled with `seed`; round(test_fraction * n) go to the second part.

        Users with a single interaction keep it in the first part.
        """
        rng = np.random.default_rng(seed)
        users = self.user_rows()
        counts = self.history_counts()
        # rank of each interaction within its user's random order: sort by (user, random key)
        order = np.lexsort((rng.random(self.nnz), users))
        rank_in_user = np.empty(self.nnz, dtype=np.int64)
        rank_in_user[order] = np.arange(self.nnz) - self.matrix.indptr[users[order]]
        n_held_out = np.floor(counts * test_fraction + 0.5).astype(np.int64)
        n_held_out[counts < 2] = 0
        held_out = rank_in_user < n_held_out[users]
        return self.subset(~held_out), self.subset(held_out)

    def split_at_time(self, cutoff: float) -> tuple[Interactions, Interactions]:
        """Pairs last seen before `cutoff` (epoch seconds) and the rest.

        The matrix keeps one time per pair, so a pair seen on both sides goes to the second part;
        split the event log instead (`training.evaluation.ranking.temporal_split`) when that matters.
        """
        if self.last_seen is None:
            raise ValueError("these interactions have no timestamps")
        before = self.last_seen < cutoff
        return self.subset(before), self.subset(~before)

    def with_matrix(self, matrix: sp.csr_matrix, last_seen: np.ndarray | None = None) -> Interactions:
        """The same users, items and side features with other interactions (e.g. a test set)."""
        return replace(self, matrix=matrix, last_seen=last_seen)

    def recent_items(self, max_items: int) -> list[np.ndarray]:
        """Each user's items, most recent first, at most `max_items` of them."""
        indptr, indices = self.matrix.indptr, self.matrix.indices
        histories = []
        for user in range(self.n_users):
            items = indices[indptr[user] : indptr[user + 1]]
            if self.last_seen is not None and len(items) > 1:
                seen = self.last_seen[indptr[user] : indptr[user + 1]]
                # stable sort on the negated time keeps ties in item order
                items = items[np.argsort(-seen, kind="stable")]
            histories.append(items[:max_items])
        return histories

    @classmethod
    def from_events(
        cls,
        events: pl.DataFrame,
        user_col: str = "user_id",
        item_col: str = "item_id",
        time_col: str | None = None,
        weight_col: str | None = None,
        user_ids: Sequence | np.ndarray | None = None,
        item_ids: Sequence | np.ndarray | None = None,
    ) -> Interactions:
        """Aggregate an event log: weights add up per (user, item), the latest time is kept.

        Pass `user_ids` / `item_ids` to index into maps made elsewhere (a test set that must line
        up with its training set); events of ids outside those maps are dropped.
        """
        weight = pl.col(weight_col).cast(pl.Float64) if weight_col else pl.lit(1.0)
        columns = [pl.col(user_col).alias("user"), pl.col(item_col).alias("item"), weight.alias("weight")]
        if time_col:
            columns.append(_epoch_seconds(events, time_col).alias("time"))
        frame = events.select(columns)
        users = np.asarray(user_ids) if user_ids is not None else _sorted_unique(frame["user"])
        items = np.asarray(item_ids) if item_ids is not None else _sorted_unique(frame["item"])
        aggregations = [pl.col("weight").sum()]
        if time_col:
            aggregations.append(pl.col("time").max())
        grouped = (
            frame.join(_index_frame("user", users, frame["user"].dtype), on="user", how="inner")
            .join(_index_frame("item", items, frame["item"].dtype), on="item", how="inner")
            .group_by("user_idx", "item_idx")
            .agg(aggregations)
            .sort("user_idx", "item_idx")
        )
        rows = grouped["user_idx"].to_numpy()
        indptr = np.searchsorted(rows, np.arange(len(users) + 1)).astype(np.int64)
        matrix = sp.csr_matrix(
            (
                grouped["weight"].to_numpy().astype(np.float32),
                grouped["item_idx"].to_numpy().astype(np.int32),
                indptr,
            ),
            shape=(len(users), len(items)),
        )
        last_seen = grouped["time"].to_numpy().astype(np.float64) if time_col else None
        return cls(matrix=matrix, user_ids=users, item_ids=items, last_seen=last_seen)


def _epoch_seconds(events: pl.DataFrame, time_col: str) -> pl.Expr:
    dtype = events.schema[time_col]
    if isinstance(dtype, pl.Datetime):
        return pl.col(time_col).dt.epoch("us").cast(pl.Float64) / 1e6
    if isinstance(dtype, pl.Date):
        return pl.col(time_col).cast(pl.Datetime("us")).dt.epoch("us").cast(pl.Float64) / 1e6
    return pl.col(time_col).cast(pl.Float64)


def _sorted_unique(values: pl.Series) -> np.ndarray:
    return values.unique().sort().to_numpy()


def _index_frame(name: str, ids: np.ndarray, dtype: pl.DataType) -> pl.DataFrame:
    return pl.DataFrame(
        {name: pl.Series(ids.tolist(), dtype=dtype), f"{name}_idx": np.arange(len(ids), dtype=np.int64)}
    )
