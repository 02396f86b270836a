"""A data snapshot run records ingest counts, the lineage digest and its plot."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import mlflow
import pytest

from configs.settings import Settings
from features.ingest import ingest
from features.tables import snapshot
from training.data_snapshot import SNAPSHOT_DIGEST_TAG, log_data_snapshot


def test_snapshot_run_records_counts_and_digest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    settings = Settings(data_dir=tmp_path / "data")
    drop = tmp_path / "drop"
    drop.mkdir()
    (drop / "fx_rates.csv").write_text(
        "date,currency,usd_per_unit\n2026-01-01,USD,1\n2026-01-01,EUR,1.1\n2026-01-01,GBP,0\n"
    )
    report = ingest(settings, drop, now=datetime(2026, 2, 1, tzinfo=UTC), progress=False)

    run_id = log_data_snapshot(settings, report, seed=7)

    run = mlflow.MlflowClient(settings.mlflow_tracking_uri).get_run(run_id)
    assert run.data.metrics["fx_rates.rows_in"] == 3
    assert run.data.metrics["fx_rates.accepted"] == 2
    assert run.data.metrics["fx_rates.quarantined"] == 1
    assert run.data.params["seed"] == "7"
    first = snapshot(settings.contract_dir)
    assert run.data.tags[SNAPSHOT_DIGEST_TAG] == first["digest"]
    artifacts = {
        item.path
        for item in mlflow.MlflowClient(settings.mlflow_tracking_uri).list_artifacts(run_id, "plots")
    }
    assert "plots/ingest_accepted_vs_quarantined.png" in artifacts

    # the digest follows the content: a changed table gives another digest, the same data the same one
    assert snapshot(settings.contract_dir)["digest"] == first["digest"]
    (drop / "fx_rates.csv").write_text("date,currency,usd_per_unit\n2026-01-01,USD,1\n")
    ingest(settings, drop, now=datetime(2026, 2, 1, tzinfo=UTC), progress=False)
    assert snapshot(settings.contract_dir)["digest"] != first["digest"]
