"""`tradewind demo --no-serve` as a user runs it, in a process of its own on an empty data folder,
and what it says it made: every ingested row accounted for (the ingest log against the files on
disk and the printed balance), the data snapshot recorded in MLflow, and the three families
registered as champions, trained on that very snapshot.
"""

from __future__ import annotations

import json
import re

import polars as pl
import pytest
from endtoend_world import BIDDER, FORECASTER, RECOMMENDER, Demo

pytestmark = pytest.mark.slow

FAMILIES = {RECOMMENDER: "recommender", FORECASTER: "forecaster", BIDDER: "bidder"}


@pytest.fixture(scope="module")
def demo(demo_run: Demo) -> Demo:
    return demo_run


def test_demo_finishes_without_an_error(demo: Demo) -> None:
    assert demo.returncode == 0, demo.output[-3000:]
    assert "Traceback" not in demo.output and "error:" not in demo.output


def test_every_ingested_row_is_accepted_or_quarantined(demo: Demo) -> None:
    from features.contract import TABLES

    log = demo.settings.root / "ingest_log.jsonl"
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    generated = {folder.name for folder in demo.settings.raw_dir.iterdir() if folder.is_dir()}
    assert {entry["table"] for entry in entries} == generated and generated <= set(TABLES)
    assert len({entry["ingested_at"] for entry in entries}) == 1  # one ingest, logged once
    for entry in entries:
        table, partition = entry["table"], entry["partition"]
        assert entry["rows_in"] == entry["accepted"] + entry["quarantined"] + entry["forgotten"], entry
        assert pl.read_parquet(entry["source"]).height == entry["rows_in"], entry
        accepted = demo.settings.contract_dir / table / f"{partition}.parquet"
        assert pl.read_parquet(accepted).height == entry["accepted"], entry
        quarantined = demo.settings.quarantine_dir / table / f"{partition}.parquet"
        held = pl.read_parquet(quarantined).height if quarantined.exists() else 0
        assert held == entry["quarantined"], entry
        assert sum(entry["reasons"].values()) == entry["quarantined"], entry
    assert sum(entry["quarantined"] for entry in entries) > 0  # the simulator plants bad rows
    printed = re.search(r"rows in ([\d,]+) = accepted ([\d,]+) \+ quarantined ([\d,]+)", demo.output)
    assert printed, demo.output[-3000:]
    totals = [int(number.replace(",", "")) for number in printed.groups()]
    assert totals == [sum(entry[key] for entry in entries) for key in ("rows_in", "accepted", "quarantined")]


def test_three_champions_are_registered_trained_on_the_ingested_snapshot(demo: Demo) -> None:
    from tracking.registry import version_for_alias
    from tracking.runs import configure_tracking, tracking_client

    experiment = configure_tracking(demo.settings)  # the data folder's own store, as the demo used
    client = tracking_client()
    snapshots = client.search_runs([experiment], filter_string="tags.`tradewind.family` = 'data'")
    assert len(snapshots) == 1
    snapshot = snapshots[0]
    digests = {
        key: value for key, value in snapshot.data.tags.items() if key.startswith("tradewind.snapshot.")
    }
    log = [json.loads(line) for line in (demo.settings.root / "ingest_log.jsonl").read_text().splitlines()]
    for entry in log:
        assert snapshot.data.metrics[f"{entry['table']}.accepted"] == entry["accepted"]
        assert snapshot.data.metrics[f"{entry['table']}.quarantined"] == entry["quarantined"]

    for name, family in FAMILIES.items():
        champion = version_for_alias(name, "champion")
        assert champion is not None, f"no champion for {name}"
        assert f"models:/{name}@champion (version {champion.version})" in demo.output
        run = client.get_run(champion.run_id)
        assert run.info.status == "FINISHED" and run.data.tags["tradewind.family"] == family
        primary = champion.tags["primary_metric"]
        assert float(champion.tags["primary_value"]) == pytest.approx(run.data.metrics[primary])
        lineage = {
            key: value for key, value in run.data.tags.items() if key.startswith("tradewind.snapshot.")
        }
        assert lineage and all(digests[key] == value for key, value in lineage.items()), (name, lineage)
