"""The command's console and the tables it prints for the results of the parts (ingest, train,
monitor), shared by the verbs and the demo."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

console = Console()


def print_ingest_report(report: Any, seconds: float) -> None:
    counts = Table(title=f"Ingest: {report.rows_in:,} rows in {seconds:.1f} s", title_justify="left")
    for header in ("table", "partition"):
        counts.add_column(header)
    for header in ("rows in", "accepted", "quarantined"):
        counts.add_column(header, justify="right")
    reasons = Table(title="Quarantined rows by reason", title_justify="left")
    reasons.add_column("table")
    reasons.add_column("reason")
    reasons.add_column("rows", justify="right")
    for result in report.results:
        counts.add_row(
            result.table,
            result.partition,
            f"{result.rows_in:,}",
            f"{result.accepted:,}",
            f"{result.quarantined:,}",
        )
        for reason, rows in result.reasons.items():
            reasons.add_row(result.table, reason, f"{rows:,}")
    console.print(counts)
    if reasons.row_count:
        console.print(reasons)
    console.print(
        f"rows in {report.rows_in:,} = accepted {report.accepted:,} + quarantined {report.quarantined:,}"
        + (f" + forgotten users' rows dropped {report.forgotten:,}" if report.forgotten else "")
    )
    for result in report.results:
        if result.ignored_columns:
            console.print(
                f"note: {result.source}: columns not in the contract were not kept: "
                f"{', '.join(result.ignored_columns)}"
            )


def print_train_result(result: Any) -> None:
    evaluation = result.evaluation
    console.print(
        f"MLflow run {result.run_id}: {evaluation.primary_metric} = {evaluation.primary:.4f} "
        f"({result.seconds:.1f} s)"
    )
    if result.version is not None:
        console.print(
            f"registered {result.version.name} version {result.version.version} "
            f"as {', '.join(result.aliases)}: models:/{result.version.name}@{result.aliases[0]}"
        )


def print_monitor_result(result: Any) -> None:
    rows = [*result.predictions, *result.features]
    table = Table(title=f"{result.model}: PSI ({result.window.describe()})", title_justify="left")
    for header in ("name", "status", "PSI", "reference rows", "current rows"):
        table.add_column(header, justify="right" if header != "name" else "left")
    for row in rows:
        if row.kind == "prediction" or row.status in ("warn", "alert"):
            psi = "n/a" if row.psi is None else f"{row.psi:.3f}"
            table.add_row(row.name, row.status, psi, str(row.reference_rows), str(row.current_rows))
    console.print(table)
    counts = {
        status: sum(row.status == status for row in result.features) for status in ("ok", "warn", "alert")
    }
    skipped = sum(row.status == "skipped" for row in result.features)
    console.print(
        f"features: {counts['ok']} ok, {counts['warn']} warn, {counts['alert']} alert, "
        f"{skipped} skipped (too few rows)"
    )
    live = result.live
    value = "n/a" if live.value is None else f"{live.value:.4g}"
    trained = "n/a" if live.training_value is None else f"{live.training_value:.4g}"
    change = live.error_change
    change = "" if change is None else f", {abs(change):.1%} {'worse' if change > 0 else 'better'}"
    console.print(
        f"live {live.metric}: {value} vs {trained} at training ({live.training_metric}){change}; "
        f"{live.observations} observations; {live.since}"
    )
    if live.note:
        console.print(f"  note: {live.note}")
    verdict = "RETRAIN" if result.should_retrain else "no retrain needed"
    console.print(f"champion version {result.champion_version}: {verdict}")
    for reason in result.reasons:
        console.print(f"  {reason}")
    console.print(f"MLflow run {result.run_id} ({result.seconds:.1f} s)")
