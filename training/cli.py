"""The `tradewind` command: a thin layer, each verb calls one function of the parts.

Heavy libraries (Feast, MLflow, Ray, torch) are imported inside the verbs that need them, so
`tradewind --help` and the light verbs start fast.
"""

from __future__ import annotations

import functools
import os

# OpenMP threads (LightGBM) wait passively, not spinning: on shared cores spinning turns training into a
# crawl. Set before any verb loads LightGBM; an explicit setting in the environment wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from configs import ConfigError
from configs.settings import Settings, load_settings

app = typer.Typer(
    help="Tradewind: recommendation, demand forecasting and ad bidding for a cross-border marketplace.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
features_app = typer.Typer(help="The Feast feature repo: build feature tables, apply, materialize.")
app.add_typer(features_app, name="features")

console = Console()
FuncT = TypeVar("FuncT", bound=Callable[..., Any])


def clear_errors(func: FuncT) -> FuncT:
    """Known user errors print one clear message and exit 2, never a stack trace."""
    from features.ingest import IngestRefused

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (ConfigError, IngestRefused, FileNotFoundError, LookupError) as error:
            for line in str(error).splitlines():  # plain lines: never wrapped, easy to grep
                typer.echo(f"error: {line}", err=True)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


@app.callback()
def main(
    data_dir: Annotated[
        Path | None, typer.Option(help="Data folder (default: configs/platform.yaml, or TRADEWIND_DATA_DIR).")
    ] = None,
) -> None:
    if data_dir is not None:
        os.environ["TRADEWIND_DATA_DIR"] = str(data_dir.resolve())


def _settings() -> Settings:
    return load_settings()


# ---------------------------------------------------------------------------------------------
# data


@app.command()
@clear_errors
def contract(markdown: Annotated[bool, typer.Option(help="Print the Markdown document.")] = False) -> None:
    """Show the data contract: every table, column, type and row rule."""
    from features.contract import TABLES, contract_markdown

    if markdown:
        sys.stdout.write(contract_markdown() + "\n")
        return
    for schema in TABLES.values():
        table = Table(title=f"{schema.name}: {schema.description}", title_justify="left")
        for header in ("column", "type", "meaning"):
            table.add_column(header)
        for column in schema.columns:
            table.add_row(column.name, str(column.dtype), column.description)
        console.print(table)


@app.command()
@clear_errors
def generate(
    scale: Annotated[float, typer.Option(help="Multiply users, products, campaigns and auctions.")] = 1.0,
    seed: Annotated[int | None, typer.Option(help="Override the config's seed.")] = None,
    config: Annotated[Path, typer.Option(help="Simulator config.")] = Path("marketplace"),
) -> None:
    """Generate the synthetic marketplace into the data folder's raw/ (ground truth apart)."""
    from configs import load_config
    from features.simulator import MarketplaceConfig, generate_marketplace

    settings = _settings()
    summary = generate_marketplace(
        load_config(config, MarketplaceConfig), settings.raw_dir, settings.truth_dir, scale=scale, seed=seed
    )
    table = Table(title=f"Generated marketplace in {summary.seconds:.1f} s -> {settings.raw_dir}")
    table.add_column("table")
    table.add_column("rows", justify="right")
    for name, rows in summary.rows.items():
        table.add_row(name, f"{rows:,}")
    console.print(table)


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
    )
    for result in report.results:
        if result.ignored_columns:
            console.print(
                f"note: {result.source}: columns not in the contract were not kept: "
                f"{', '.join(result.ignored_columns)}"
            )


@app.command()
@clear_errors
def ingest(
    source: Annotated[
        Path | None,
        typer.Argument(
            help="A raw folder or <table>.csv/.parquet file, or a real data set's file or folder."
        ),
    ] = None,
    dataset: Annotated[
        str | None,
        typer.Option(help="Real data set: online-retail, movielens-100k, walmart, ipinyou."),
    ] = None,
    partition: Annotated[str | None, typer.Option(help="Only this partition; also names flat files.")] = None,
) -> None:
    """Validate raw files against the contract; bad rows go to quarantine with their reason.

    A real data set (given by --dataset, or recognised from SOURCE) is first turned into contract
    tables by its loader, in a workspace of its own: <data dir>/datasets/<name>/.
    """
    from features.ingest import ingest as run_ingest
    from features.loaders import DATASETS, default_source, detect_dataset

    settings = _settings()
    if dataset is None and source is not None and source.exists():
        dataset = detect_dataset(source)
    started = time.perf_counter()
    if dataset is not None:
        if dataset not in DATASETS:
            raise ConfigError(f"--dataset: unknown data set {dataset!r} (known: {', '.join(DATASETS)})")
        source = source or default_source(dataset)
        if not source.exists():
            raise FileNotFoundError(f"{source}: data set {dataset} not found")
        settings = settings.for_dataset(dataset)
        console.print(f"{source} is the {dataset} data set: loading into {settings.root}")
        loaded = DATASETS[dataset](source, settings.raw_dir)
        console.print(
            f"loaded {loaded.source_rows:,} source rows into raw contract tables "
            f"in {time.perf_counter() - started:.1f} s"
        )
        started = time.perf_counter()
        report = run_ingest(settings, settings.raw_dir, partition=dataset)
    else:
        report = run_ingest(settings, source, partition=partition)
    print_ingest_report(report, time.perf_counter() - started)
    console.print(f"contract tables: {settings.contract_dir}\nquarantine:      {settings.quarantine_dir}")


# ---------------------------------------------------------------------------------------------
# features


@features_app.command("build")
@clear_errors
def features_build() -> None:
    """Compute the feature tables (polars) from the contract tables."""
    from features.transforms import build_feature_tables

    settings = _settings()
    started = time.perf_counter()
    rows = build_feature_tables(settings)
    for name, count in rows.items():
        console.print(f"{name}: {count:,} rows")
    console.print(f"feature tables in {settings.feature_dir} ({time.perf_counter() - started:.1f} s)")


@features_app.command("apply")
@clear_errors
def features_apply() -> None:
    """Register entities, feature views and feature services with Feast."""
    from features.store import apply_definitions

    for name in apply_definitions(_settings()):
        console.print(f"applied {name}")


@features_app.command("materialize")
@clear_errors
def features_materialize(
    full: Annotated[bool, typer.Option(help="Reload everything instead of only what is new.")] = False,
) -> None:
    """Load the latest feature values into the online store (incremental by default)."""
    from features.store import materialize

    summary = materialize(_settings(), incremental=not full)
    console.print(summary)


# ---------------------------------------------------------------------------------------------
# models: one set of verbs for every family (training/pipeline.py does the work)

ModelArgument = Annotated[str, typer.Argument(help="recommender, forecaster or bidder.")]
ConfigOption = Annotated[
    Path | None, typer.Option("--config", help="Family config (default: configs/<model>.yaml).")
]


@app.command()
@clear_errors
def train(
    model: ModelArgument,
    config: ConfigOption = None,
    tuned: Annotated[bool, typer.Option("--tuned", help="Use the best trial of `tradewind tune`.")] = False,
    promote: Annotated[
        bool, typer.Option("--promote", help="Make the new version champion even if one exists.")
    ] = False,
) -> None:
    """Train, evaluate, log to MLflow and register a model (champion if it is the first)."""
    from training.families import family
    from training.pipeline import load_family_config
    from training.pipeline import train as run_train

    chosen = family(model)
    result = run_train(
        _settings(),
        chosen,
        load_family_config(chosen, config),
        use_tuned=tuned,
        promote_policy="always" if promote else "if_first",
    )
    print_train_result(result)


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


@app.command()
@clear_errors
def tune(
    model: ModelArgument,
    trials: Annotated[int, typer.Option(help="Trials to run now (the study resumes where it stopped).")] = 10,
    config: ConfigOption = None,
    timeout: Annotated[
        float | None, typer.Option(help="Stop starting trials after this many seconds.")
    ] = None,
) -> None:
    """Tune with Optuna (pruning; study in SQLite, so it resumes), each trial a nested MLflow run."""
    from training.families import family
    from training.pipeline import load_family_config
    from training.pipeline import tune as run_tune

    chosen = family(model)
    result = run_tune(_settings(), chosen, trials, load_family_config(chosen, config), timeout_s=timeout)
    console.print(
        f"study tune-{model}: {result.trials_total} trials in all ({result.pruned} pruned), "
        f"best value {result.best_value:.4f} with {dict(result.best_params)}"
    )
    console.print(f"MLflow parent run {result.parent_run_id}; train with it: tradewind train {model} --tuned")


BENCHMARKS = {
    "recommender": "benchmarks.recommender",
    "forecaster": "benchmarks.forecaster",
    "bidder": "benchmarks.bidder",
    "serving": "benchmarks.serving",
}


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    add_help_option=False,
)
def benchmark(
    ctx: typer.Context,
    what: Annotated[str, typer.Argument(help="recommender, forecaster, bidder or serving.")],
) -> None:
    """Run a benchmark and print its table; options go to it (`tradewind benchmark recommender --help`)."""
    import importlib

    if what not in BENCHMARKS:
        typer.echo(f"error: unknown benchmark {what!r} (known: {', '.join(BENCHMARKS)})", err=True)
        raise typer.Exit(2)
    raise typer.Exit(importlib.import_module(BENCHMARKS[what]).main(list(ctx.args)) or 0)


@app.command()
@clear_errors
def serve(
    config: Annotated[Path, typer.Option(help="Ray Serve config file.")] = Path("serving"),
) -> None:
    """Serve /recommend, /forecast, /bid, /models and /docs locally (`serve run configs/serving.yaml`)."""
    from serving.deploy import serve_run

    raise typer.Exit(serve_run(_settings(), str(config)))


# ---------------------------------------------------------------------------------------------
# the whole flow


@app.command()
@clear_errors
def demo(
    scale: Annotated[float, typer.Option(help="Size of the generated marketplace.")] = 1.0,
    serve: Annotated[bool, typer.Option(help="End by serving the endpoints and showing answers.")] = True,
) -> None:
    """Run the platform end to end on the embedded defaults and say where to look."""
    from training.demo import run_demo

    run_demo(_settings(), scale=scale, console=console, serve=serve)


if __name__ == "__main__":
    app()
