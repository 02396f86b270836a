"""`tradewind demo`: the platform end to end on the embedded defaults.

generate -> ingest (quarantine) -> feature tables -> Feast apply -> materialize, with the data
snapshot recorded as an MLflow run, then a note of what was made and how to look at it. Later
steps (training, registry, serving) are added here as their model families land.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.table import Table

from configs import PROJECT_ROOT, load_config
from configs.settings import Settings


@dataclass
class DemoReport:
    steps: dict[str, float] = field(default_factory=dict)  # step -> seconds
    details: dict[str, Any] = field(default_factory=dict)


def _timed(report: DemoReport, console: Console, name: str, step: Callable[[], Any]) -> Any:
    console.rule(f"[bold]{name}")
    started = time.perf_counter()
    result = step()
    report.steps[name] = time.perf_counter() - started
    console.print(f"[green]done[/green] {name} in {report.steps[name]:.1f} s")
    return result


def run_demo(settings: Settings, scale: float = 1.0, console: Console | None = None) -> DemoReport:
    from features.ingest import ingest
    from features.simulator import MarketplaceConfig, generate_marketplace
    from features.store import apply_definitions, materialize
    from features.transforms import build_feature_tables
    from training.cli import print_ingest_report
    from training.data_snapshot import log_data_snapshot

    console = console or Console()
    report = DemoReport()
    config = load_config("marketplace", MarketplaceConfig)

    summary = _timed(
        report,
        console,
        "generate the marketplace",
        lambda: generate_marketplace(config, settings.raw_dir, settings.truth_dir, scale=scale),
    )
    report.details["generated_rows"] = summary.rows
    ingested = _timed(
        report, console, "ingest against the contract", lambda: ingest(settings, settings.raw_dir)
    )
    print_ingest_report(ingested, report.steps["ingest against the contract"])
    report.details["quarantined"] = ingested.quarantined
    report.details["feature_rows"] = _timed(
        report, console, "build feature tables", lambda: build_feature_tables(settings)
    )
    for table, rows in report.details["feature_rows"].items():
        console.print(f"  {table}: {rows:,} rows")
    report.details["applied"] = _timed(report, console, "feast apply", lambda: apply_definitions(settings))
    report.details["materialized"] = _timed(
        report, console, "feast materialize", lambda: materialize(settings)
    )
    console.print(report.details["materialized"])
    report.details["snapshot_run"] = _timed(
        report,
        console,
        "record the data snapshot in MLflow",
        lambda: log_data_snapshot(settings, ingested, scale=scale, seed=config.seed),
    )
    _print_summary(settings, report, console)
    return report


def _print_summary(settings: Settings, report: DemoReport, console: Console) -> None:
    table = Table(title="Tradewind demo: what was made", title_justify="left")
    table.add_column("step")
    table.add_column("seconds", justify="right")
    for step, seconds in report.steps.items():
        table.add_row(step, f"{seconds:.1f}")
    console.print(table)
    repo = PROJECT_ROOT / "features" / "feature_repo"
    console.print(
        f"""
Data folder:       {settings.root}
  raw/             files as generated; ground_truth/ holds the simulator's truth (never a feature)
  contract/        validated tables
  quarantine/      {report.details["quarantined"]:,} rejected rows, each with its reason
  features/        feature tables read by Feast's offline store; feast/ holds registry and online store

Look at it (first: . .venv/bin/activate):
  MLflow UI:  mlflow ui --backend-store-uri {settings.mlflow_tracking_uri}
  Feast UI:   cd {repo} && feast ui
  Contract:   tradewind contract      (or features/CONTRACT.md)
"""
    )
