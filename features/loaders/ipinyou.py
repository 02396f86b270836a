"""iPinYou real-time-bidding impression logs (season 3, 2013; make-ipinyou-data layout) as raw tables.

Source: a folder of `*.log.txt` files (here `train.log.txt` and `test.log.txt` of advertiser 2259),
tab separated, no header, the 27 columns of `LOG_COLUMNS` (test logs add two trailing columns, all
zeros, which are ignored). Every line is an impression iPinYou won and paid for.

Mapping:
- markets: one, "CN" (CNY, Asia/Shanghai, zh-CN, from `countries.COUNTRIES`).
- campaigns: one per advertiser in the logs, `ipinyou-<advertiser>` (here `ipinyou-2259`), market
  CN, no promoted product, objective "clicks" (the competition's goal), currency CNY, start and end
  = first and last Beijing day in the logs. daily_budget = the largest day's spend in the logs, in
  CNY: each impression costs payprice / 1000 fen (payprice is a CPM), i.e. payprice / 100,000 CNY.
  That is the smallest budget no logged day broke; it describes this 1% sample (a few CNY a day),
  not the advertiser's real budget.
- auctions: one per log line, all files in the one partition `ipinyou` (train lines first).
  auction_id = bidid; request_ts = the timestamp column (yyyyMMddHHmmssSSS, Beijing time) in UTC;
  exchange, slot_id, region = the log's ids as text
  (region 216 is Guangdong in iPinYou's code list; the lists are not shipped with the data);
  slot_width/height as logged; user_id null (ipinyouid is a cookie, not a marketplace user).
  Prices: the log's fen-per-thousand-impressions divided by 100, i.e. CNY CPM (the contract's
  "CPM-style" unit): floor_price = slotprice / 100, market_price = payprice / 100 (the second price
  paid: the price to beat), bid_price = bidprice / 100. won = True on every row (these are won
  impressions), click from the log, conversion False and value 0 (the logs hold no conversions for
  this advertiser), currency CNY.
- side table `ipinyou_split/ipinyou.parquet` (auction_id, split): which log file each line came
  from (`train`, `test`: the file name before `.log.txt`), so the competition's train/test split
  survives; the two overlap in time (2013-10-22), so request_ts alone cannot recover it. Ingest
  does not read it.
- fx_rates: CNY, every Beijing day of the logs, at the 2013 annual average (`fx.py`).
Nothing is flagged here. Known oddities left as they are: payprice is below the floor on about 0.6%
of lines (as in the original data), and one bidid appears on two train lines; ingest's duplicate
auction_id rule quarantines the second.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from configs import InputError
from features.loaders.countries import markets_frame
from features.loaders.fx import daily_fx_rates
from features.loaders.raw import LoadSummary, RawOutput

DATASET = "ipinyou"
SPLIT_TABLE = "ipinyou_split"
LOG_SUFFIX = ".log.txt"
LOG_COLUMNS = (
    "click", "weekday", "hour", "bidid", "timestamp", "logtype", "ipinyouid", "useragent", "IP",
    "region", "city", "adexchange", "domain", "url", "urlid", "slotid", "slotwidth", "slotheight",
    "slotvisibility", "slotformat", "slotprice", "creative", "bidprice", "payprice", "keypage",
    "advertiser", "usertag",
)  # fmt: skip
TIMESTAMP_FORMAT = "%Y%m%d%H%M%S%3f"
TIMESTAMP_DIGITS = 17
MARKET = "CN"
TIMEZONE = "Asia/Shanghai"
CURRENCY = "CNY"
FX_YEAR = 2013
OBJECTIVE = "clicks"
FEN_PER_YUAN = 100
IMPRESSIONS_PER_CPM = 1000


def log_files(source: Path) -> list[Path]:
    """The `*.log.txt` files of the folder (`source`, or the folder of a given file)."""
    folder = source if source.is_dir() else source.parent
    if not folder.is_dir():
        raise FileNotFoundError(f"{source}: no such file or folder")
    files = sorted(folder.glob(f"*{LOG_SUFFIX}"))
    if not files:
        raise FileNotFoundError(f"{folder}: no iPinYou *{LOG_SUFFIX} files")
    return files


def split_name(path: Path) -> str:
    return path.name.removesuffix(LOG_SUFFIX)


def read_log(path: Path) -> pl.DataFrame:
    """One log file, all columns as text (quotes in user agents and URLs are not quoting)."""
    frame = pl.read_csv(path, separator="\t", has_header=False, quote_char=None, infer_schema=False)
    if frame.width < len(LOG_COLUMNS):
        raise InputError(f"{path}: {frame.width} columns, an iPinYou log has at least {len(LOG_COLUMNS)}")
    frame = frame.select(frame.columns[: len(LOG_COLUMNS)])
    return frame.rename(dict(zip(frame.columns, LOG_COLUMNS, strict=True)))


def _beijing_time(logs: pl.DataFrame) -> pl.DataFrame:
    local = pl.col("timestamp").str.strptime(pl.Datetime("ms"), TIMESTAMP_FORMAT, strict=True)
    return logs.with_columns(
        request_ts=local.dt.replace_time_zone(TIMEZONE).dt.convert_time_zone("UTC"),
        local_date=local.dt.date(),
    )


def _fen_cpm_to_yuan_cpm(column: str) -> pl.Expr:
    return pl.col(column).cast(pl.Int64) / FEN_PER_YUAN


def build_auctions(logs: pl.DataFrame) -> pl.DataFrame:
    return logs.select(
        pl.col("bidid").alias("auction_id"),
        "request_ts",
        pl.format("ipinyou-{}", pl.col("advertiser")).alias("campaign_id"),
        pl.lit(MARKET).alias("market_id"),
        pl.col("adexchange").alias("exchange"),
        pl.col("slotid").alias("slot_id"),
        pl.col("slotwidth").cast(pl.Int64).alias("slot_width"),
        pl.col("slotheight").cast(pl.Int64).alias("slot_height"),
        pl.col("region"),
        pl.lit(None, dtype=pl.String).alias("user_id"),
        _fen_cpm_to_yuan_cpm("slotprice").alias("floor_price"),
        _fen_cpm_to_yuan_cpm("payprice").alias("market_price"),
        _fen_cpm_to_yuan_cpm("bidprice").alias("bid_price"),
        pl.lit(True).alias("won"),
        (pl.col("click").cast(pl.Int64) > 0).alias("click"),
        pl.lit(False).alias("conversion"),
        pl.lit(0.0).alias("value"),
        pl.lit(CURRENCY).alias("currency"),
    )


def build_campaigns(logs: pl.DataFrame) -> pl.DataFrame:
    cost_per_impression = pl.col("payprice").cast(pl.Int64) / (IMPRESSIONS_PER_CPM * FEN_PER_YUAN)
    daily_spend = logs.group_by("advertiser", "local_date").agg(spend=cost_per_impression.sum())
    return (
        daily_spend.group_by("advertiser")
        .agg(
            daily_budget=pl.col("spend").max(),
            start_date=pl.col("local_date").min(),
            end_date=pl.col("local_date").max(),
        )
        .sort("advertiser")
        .select(
            pl.format("ipinyou-{}", pl.col("advertiser")).alias("campaign_id"),
            pl.col("advertiser").alias("advertiser_id"),
            pl.lit(MARKET).alias("market_id"),
            pl.lit(None, dtype=pl.String).alias("product_id"),
            pl.lit(OBJECTIVE).alias("objective"),
            "daily_budget",
            pl.lit(CURRENCY).alias("currency"),
            "start_date",
            "end_date",
        )
    )


def load(source: Path, raw_dir: Path) -> LoadSummary:
    """Read the iPinYou logs (their folder, or any log in it) and write raw tables under raw_dir."""
    files = sorted(log_files(source), key=lambda path: (split_name(path) != "train", path.name))
    logs = pl.concat(
        [_beijing_time(read_log(path)).with_columns(split=pl.lit(split_name(path))) for path in files]
    )
    days = logs.get_column("local_date")

    output = RawOutput(DATASET, raw_dir)
    output.write("fx_rates", daily_fx_rates([CURRENCY], days.min(), days.max(), FX_YEAR))
    output.write("markets", markets_frame([MARKET]))
    output.write("campaigns", build_campaigns(logs))
    output.write("auctions", build_auctions(logs))
    output.write_side_table(SPLIT_TABLE, logs.select(pl.col("bidid").alias("auction_id"), "split"))
    return output.summary(source_rows=logs.height)
