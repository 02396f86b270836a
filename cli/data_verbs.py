"""The data verbs: contract, generate, ingest, forget-user, and features build/apply/materialize
(features/ does the work)."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from cli.errors import BAD_INPUT_EXIT, debugging, echo_error, is_user_error
from cli.reports import console, print_ingest_report
from configs import InputError
from configs.settings import load_settings


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


def generate(
    scale: Annotated[float, typer.Option(help="Multiply users, products, campaigns and auctions.")] = 1.0,
    seed: Annotated[int | None, typer.Option(help="Override the config's seed.")] = None,
    config: Annotated[Path, typer.Option(help="Simulator config.")] = Path("marketplace"),
    hold_back_days: Annotated[
        int,
        typer.Option(
            min=0, help="Keep the last N days of activity apart as daily raw partitions, for `retrain`."
        ),
    ] = 0,
) -> None:
    """Generate the synthetic marketplace into the data folder's raw/ (ground truth apart)."""
    from configs import load_config
    from features.simulator import MarketplaceConfig, generate_marketplace

    if scale <= 0:
        raise InputError(f"--scale: expected a number above 0, got {scale:g}")
    settings = load_settings()
    summary = generate_marketplace(
        load_config(config, MarketplaceConfig), settings.raw_dir, settings.truth_dir, scale=scale, seed=seed
    )
    table = Table(title=f"Generated marketplace in {summary.seconds:.1f} s -> {settings.raw_dir}")
    table.add_column("table")
    table.add_column("rows", justify="right")
    for name, rows in summary.rows.items():
        table.add_row(name, f"{rows:,}")
    console.print(table)
    if hold_back_days:
        from features.simulator.partitions import hold_back_days as hold_back

        held = hold_back(settings.raw_dir, hold_back_days)
        console.print(
            f"held back {len(held)} daily partitions ({held[0]} .. {held[-1]}): "
            "`tradewind ingest --partition generated`, then `tradewind retrain MODEL` takes one a run"
        )


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

    settings = load_settings()
    if dataset is None and source is not None and source.exists():
        dataset = detect_dataset(source)
    started = time.perf_counter()
    if dataset is not None:
        if dataset not in DATASETS:
            raise InputError(f"--dataset: unknown data set {dataset!r} (known: {', '.join(DATASETS)})")
        source = source or default_source(dataset)
        if not source.exists():
            raise FileNotFoundError(f"{source}: data set {dataset} not found")
        settings = settings.for_dataset(dataset)
        loaded = DATASETS[dataset](source, settings.raw_dir)
        console.print(
            f"{source} is the {dataset} data set: loaded {loaded.source_rows:,} source rows into raw "
            f"contract tables in {settings.raw_dir} in {time.perf_counter() - started:.1f} s"
        )
        started = time.perf_counter()
        report = run_ingest(settings, settings.raw_dir, partition=dataset)
    else:
        report = run_ingest(settings, source, partition=partition)
    print_ingest_report(report, time.perf_counter() - started)
    console.print(f"contract tables: {settings.contract_dir}\nquarantine:      {settings.quarantine_dir}")


def _os_user() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):  # a container user with no passwd entry
        return "unknown"


def forget_user(
    ctx: typer.Context,
    user_id: Annotated[str, typer.Argument(help="The user's id, as in the contract table users.")],
    reason: Annotated[str, typer.Option(help="Why (kept in the audit log).")] = "erasure request",
    requested_by: Annotated[
        str | None, typer.Option(help="Who asked (kept in the audit log; default: the OS user).")
    ] = None,
) -> None:
    """Remove a user from the contract, raw, quarantine and feature tables and the online store; serve
    them as an unknown user from then on; audit it in <data dir>/privacy/audit.jsonl (by digest).

    Forgetting twice is fine (nothing more to remove). An id found nowhere is still audited, with zero
    counts, and put on the forgotten list. MLflow history is left as it is (see the README).
    """
    from features.forget import forget_user as run_forget

    settings = load_settings()
    try:
        report = run_forget(settings, user_id, requested_by=requested_by or _os_user(), reason=reason)
    except Exception as error:
        if debugging(ctx):
            raise
        if isinstance(error, ValueError) or is_user_error(error):  # a wrong id, a data folder that is a file
            echo_error(str(error))
            raise typer.Exit(BAD_INPUT_EXIT) from None
        # e.g. the online store unreachable: the audit has what went so far
        first = (str(error).strip().splitlines() or [""])[0]
        typer.echo(
            f"error: forget-user stopped: {type(error).__name__}: {first}; what was removed so far is "
            "in the audit log (status failed), run it again to finish",
            err=True,
        )
        raise typer.Exit(1) from None
    if report.status == "not_found":
        console.print(
            f"user {user_id!r}: no data found in {settings.root} ({report.places_checked} places checked); "
            "audited and put on the forgotten list"
        )
    elif report.status == "already_forgotten":
        console.print(f"user {user_id!r} was forgotten before: nothing left to remove")
    else:
        table = Table(title=f"Forgot user {user_id!r} in {settings.root}", title_justify="left")
        table.add_column("place")
        table.add_column("removed", justify="right")
        table.add_column("what")
        for removal in report.removals:
            table.add_row(removal.place, f"{removal.count:,}", removal.unit)
        console.print(table)
        console.print(f"{report.total:,} rows and keys removed from {report.places_checked} places checked")
    console.print(f"audit: {report.audit_path} (user digest {report.user_digest[:16]}...)")


# ---------------------------------------------------------------------------------------------
# features


def _require_tables(folder: Path, what: str, run_first: str) -> None:
    """A step that reads tables refuses an empty data folder with the step to run first, rather than
    doing nothing (or registering features of nothing) and exiting 0."""
    if not any(folder.glob("*/*.parquet")):
        raise InputError(f"{folder}: no {what} in this data folder; run {run_first} first")


def features_build() -> None:
    """Compute the feature tables (polars) from the contract tables."""
    from features.transforms import build_feature_tables

    settings = load_settings()
    _require_tables(settings.contract_dir, "contract tables", "`tradewind ingest` (or `tradewind demo`)")
    started = time.perf_counter()
    rows = build_feature_tables(settings)
    for name, count in rows.items():
        console.print(f"{name}: {count:,} rows")
    console.print(f"feature tables in {settings.feature_dir} ({time.perf_counter() - started:.1f} s)")


def features_apply() -> None:
    """Register entities, feature views and feature services with Feast."""
    settings = load_settings()
    _require_tables(settings.feature_dir, "feature tables", "`tradewind features build`")
    from features.store import apply_definitions  # Feast: seconds to import, after the check

    for name in apply_definitions(settings):
        console.print(f"applied {name}")


def features_materialize(
    full: Annotated[bool, typer.Option(help="Reload everything instead of only what is new.")] = False,
) -> None:
    """Load the latest feature values into the online store (incremental by default)."""
    settings = load_settings()
    _require_tables(settings.feature_dir, "feature tables", "`tradewind features build` and `apply`")
    from features.store import materialize

    summary = materialize(settings, incremental=not full)
    console.print(summary)
