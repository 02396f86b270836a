"""Loaders that turn the real public data sets into raw contract tables for `features.ingest`.

Each loader is `load(source, raw_dir) -> LoadSummary`: it reads a data set as published (a file or
its folder; a file of a multi-file set stands for its folder, except Online Retail's single file)
and writes `<raw_dir>/<table>/<partition>.parquet` for every contract table it fills. Loaders filter
nothing: every source row becomes a raw row, and data-set-specific mess is flagged in
`_reject_reason` for ingest to quarantine (see each module's docstring for the mapping and reasons).

- `DATASETS`: the loaders by data set name.
- `default_source(name)`: where the data set lives beside the project (`../shared/data/...`).
- `detect_dataset(path)`: which data set a user-given file or folder is, from its columns and names.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from configs import PROJECT_ROOT
from features.loaders import ipinyou, movielens, online_retail, walmart
from features.loaders.raw import LoadSummary

Loader = Callable[[Path, Path], LoadSummary]

DATASETS: dict[str, Loader] = {
    online_retail.DATASET: online_retail.load,
    movielens.DATASET: movielens.load,
    walmart.DATASET: walmart.load,
    ipinyou.DATASET: ipinyou.load,
}

SHARED_DATA_DIR = PROJECT_ROOT.parent / "shared" / "data"
# folder names under ../shared/data, which differ from the data set names in places
SOURCE_FOLDERS: dict[str, str] = {
    online_retail.DATASET: "online-retail",
    movielens.DATASET: "movielens-100k",
    walmart.DATASET: "walmart-weekly",
    ipinyou.DATASET: "ipinyou-2259",
}

# header lines of the three Walmart CSV files
WALMART_HEADERS = (
    "Store,Dept,Date,Weekly_Sales,IsHoliday",
    "Store,Type,Size",
    "Store,Date,Temperature,Fuel_Price",
)
IPINYOU_BID_ID = re.compile(r"[0-9a-f]{20,40}")


def default_source(name: str) -> Path:
    """The data set's folder under `<project root>/../shared/data` (it may not exist)."""
    if name not in SOURCE_FOLDERS:
        raise KeyError(f"unknown data set {name!r}; known: {', '.join(DATASETS)}")
    return SHARED_DATA_DIR / SOURCE_FOLDERS[name]


def detect_dataset(path: Path) -> str | None:
    """The data set a file (or a folder's first recognisable file) belongs to, or None."""
    if path.is_dir():
        for child in sorted(path.iterdir()):
            if child.is_file() and (name := _detect_file(child)) is not None:
                return name
        return None
    return _detect_file(path) if path.is_file() else None


def _first_line(path: Path) -> str:
    with path.open("rb") as stream:
        line = stream.readline(100_000)
    # tolerate CR-only line endings (Walmart's stores.csv) and latin-1 text (MovieLens)
    return line.decode("latin-1").replace("\r", "\n").split("\n")[0]


def _detect_file(path: Path) -> str | None:
    if path.suffix.lower() in (".parquet", ".csv") and online_retail.source_columns(
        online_retail.header_columns(path)
    ):
        return online_retail.DATASET
    if path.suffix.lower() == ".parquet":
        return None
    if path.name.startswith("u.") and all(
        (path.parent / name).is_file() for name in movielens.REQUIRED_FILES
    ):
        return movielens.DATASET
    line = _first_line(path)
    if path.suffix == ".csv" and line.startswith(WALMART_HEADERS):
        return walmart.DATASET
    fields = line.split("\t")
    if (
        len(fields) >= len(ipinyou.LOG_COLUMNS)
        and IPINYOU_BID_ID.fullmatch(fields[3])
        and len(fields[4]) == ipinyou.TIMESTAMP_DIGITS
        and fields[4].isdigit()
    ):
        return ipinyou.DATASET
    return None
