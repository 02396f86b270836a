"""Readable ids for simulated rows: a prefix and a zero-padded number (U00000042, P0001234)."""

from __future__ import annotations

import numpy as np
import polars as pl

ID_DIGITS = {"U": 8, "P": 7, "E": 10, "A": 10, "C": 5, "ADV": 4}


def format_ids(prefix: str, numbers: np.ndarray, name: str = "id") -> pl.Series:
    """`prefix` + the numbers zero-padded to that prefix's width, as a string column."""
    width = ID_DIGITS[prefix]
    # adding 10**width and dropping the leading 1 pads faster than str.zfill
    padded = pl.Series(name, np.asarray(numbers, dtype=np.int64) + 10**width).cast(pl.String).str.slice(1)
    return pl.select(pl.lit(prefix) + padded).to_series().alias(name)


def lookup_ids(prefix: str, indices: np.ndarray, name: str = "id") -> pl.Series:
    """Ids of 0-based indices that repeat (users on events): format each distinct id once, then gather."""
    indices = np.asarray(indices, dtype=np.int64)
    if len(indices) == 0:
        return pl.Series(name, [], dtype=pl.String)
    return format_ids(prefix, np.arange(1, indices.max() + 2), name).gather(indices)
