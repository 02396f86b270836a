"""Record a data snapshot as an MLflow run: what was ingested, what was quarantined, and the
content digest that training runs quote as their lineage."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import polars as pl

from configs.settings import Settings
from features.ingest import IngestReport
from features.tables import snapshot
from tracking.runs import log_data_lineage, log_figure, log_metrics, log_params, log_table, tracked_run

SNAPSHOT_DIGEST_TAG = "tradewind.snapshot_digest"


def log_data_snapshot(settings: Settings, report: IngestReport, **params: object) -> str:
    """Log the ingest counts and the contract snapshot; returns the run id."""
    data = snapshot(settings.contract_dir)
    results = pl.DataFrame(
        [
            {
                "table": r.table,
                "partition": r.partition,
                "rows_in": r.rows_in,
                "accepted": r.accepted,
                "quarantined": r.quarantined,
                "reasons": "; ".join(f"{reason}: {count}" for reason, count in r.reasons.items()),
            }
            for r in report.results
        ]
    )
    with tracked_run(
        settings, "data-snapshot", family="data", tags={SNAPSHOT_DIGEST_TAG: data["digest"]}
    ) as run:
        log_params({"data_dir": str(settings.root), **params})
        per_table = results.group_by("table").agg(pl.col("rows_in", "accepted", "quarantined").sum())
        log_metrics(
            {
                f"{row['table']}.{count}": row[count]
                for row in per_table.iter_rows(named=True)
                for count in ("rows_in", "accepted", "quarantined")
            }
        )
        log_data_lineage("none", {table: info["digest"] for table, info in data["tables"].items()})
        log_table(results, "ingest_report")
        log_figure(_ingest_figure(per_table.sort("table")), "ingest_accepted_vs_quarantined")
        return run.info.run_id


def _ingest_figure(per_table: pl.DataFrame) -> plt.Figure:
    figure, axis = plt.subplots(figsize=(8, 4))
    tables = per_table.get_column("table").to_list()
    axis.barh(tables, per_table.get_column("accepted"), label="accepted")
    axis.barh(
        tables,
        per_table.get_column("quarantined"),
        left=per_table.get_column("accepted"),
        label="quarantined",
    )
    axis.set_xscale("log")
    axis.set_xlabel("rows (log scale)")
    axis.set_title("Ingest: accepted and quarantined rows per table")
    axis.legend()
    figure.tight_layout()
    return figure
