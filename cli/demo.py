"""`tradewind demo`: the platform end to end on the embedded defaults.

generate -> ingest (quarantine) -> feature tables -> Feast apply -> materialize, with the data
snapshot recorded as an MLflow run, then each model family trained, evaluated and registered
(`training.pipeline.train`), then the three endpoints served with an example request and answer
each, and a note of what was made and how to look at it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from cli.reports import console as cli_console
from cli.reports import print_ingest_report, print_train_result
from configs import PROJECT_ROOT, load_config
from configs.settings import Settings, load_settings
from training.families import FAMILY_MODULES


@dataclass
class DemoReport:
    steps: dict[str, float] = field(default_factory=dict)  # step -> seconds
    details: dict[str, Any] = field(default_factory=dict)


def demo(
    scale: Annotated[float, typer.Option(help="Size of the generated marketplace.")] = 1.0,
    serve: Annotated[bool, typer.Option(help="End by serving the endpoints and showing answers.")] = True,
) -> None:
    """Run the platform end to end on the embedded defaults and say where to look."""
    run_demo(load_settings(), scale=scale, console=cli_console, serve=serve)


def _timed(report: DemoReport, console: Console, name: str, step: Callable[[], Any]) -> Any:
    console.rule(f"[bold]{name}")
    started = time.perf_counter()
    result = step()
    report.steps[name] = time.perf_counter() - started
    console.print(f"[green]done[/green] {name} in {report.steps[name]:.1f} s")
    return result


def run_demo(
    settings: Settings,
    scale: float = 1.0,
    console: Console | None = None,
    serve: bool = True,
    products: int | None = None,
) -> DemoReport:
    """The whole platform end to end. `products` sets the catalogue size before `scale` multiplies
    it (the serving benchmark's 10,000-product world keeps the default shoppers)."""
    from features.ingest import ingest
    from features.simulator import MarketplaceConfig, generate_marketplace
    from features.store import apply_definitions, materialize
    from features.transforms import build_feature_tables
    from training.data_snapshot import log_data_snapshot

    console = console or Console()
    report = DemoReport()
    config = load_config("marketplace", MarketplaceConfig)
    if products is not None:
        config = config.model_copy(
            update={"population": config.population.model_copy(update={"products": products})}
        )

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
    for command in FAMILY_MODULES:
        result = _timed(
            report,
            console,
            f"train and register the {command}",
            lambda command=command: _train(settings, command),
        )
        report.details.setdefault("trained", {})[command] = result
        print_train_result(result)
    if serve:
        from serving.demo import serve_and_show

        report.details["served"] = _timed(
            report, console, "serve all three endpoints", lambda: serve_and_show(settings, console)
        )
    _print_summary(settings, report, console)
    return report


def _train(settings: Settings, command: str) -> Any:
    from training.families import family
    from training.pipeline import train

    return train(settings, family(command))


def _print_summary(settings: Settings, report: DemoReport, console: Console) -> None:
    table = Table(title="Tradewind demo: what was made", title_justify="left")
    table.add_column("step")
    table.add_column("seconds", justify="right")
    for step, seconds in report.steps.items():
        table.add_row(step, f"{seconds:.1f}")
    console.print(table)
    repo = PROJECT_ROOT / "features" / "feature_repo"
    for command, result in report.details.get("trained", {}).items():
        if result.version is not None:
            console.print(
                f"{command}: {result.evaluation.primary_metric} {result.evaluation.primary:.4f}, "
                f"models:/{result.version.name}@{result.aliases[0]} (version {result.version.version})"
            )
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
  Serve:      tradewind serve         (then http://127.0.0.1:8000/docs and /models)
  Retrain:    tradewind train recommender|forecaster|bidder; tradewind tune <model> --trials N
  Benchmark:  tradewind benchmark recommender|forecaster|bidder|serving --help
"""
    )
