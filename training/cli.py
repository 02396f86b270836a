"""The `tradewind` command: a thin layer, each verb calls one function of the parts.

Heavy libraries (Feast, MLflow, Ray, torch) are imported inside the verbs that need them, so
`tradewind --help` and the light verbs start fast.
"""

from __future__ import annotations

import os

# OpenMP threads (LightGBM) wait passively, not spinning: on shared cores spinning turns training into a
# crawl. Set before any verb loads LightGBM; an explicit setting in the environment wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table

# typer carries its own copy of click: its usage errors are these classes, not the click package's
from typer._click import Context
from typer._click import exceptions as click_errors
from typer.core import TyperGroup

from configs import ConfigError, InputError
from configs.settings import Settings, load_settings

# Errors that mean the user's input is wrong (a file, column, format, value, config key, or a step
# not run yet): one line, exit 2. The parts' own "not there yet" errors are LookupErrors of their own
# (no champion, no tuning trial, no such job); a bare KeyError or IndexError is a bug, not input.
USER_ERRORS: tuple[type[Exception], ...] = (
    ConfigError,
    InputError,
    FileNotFoundError,
    NotADirectoryError,
    IsADirectoryError,
    PermissionError,
)
BAD_INPUT_EXIT = 2
FAILED_EXIT = 1


def is_user_error(error: Exception) -> bool:
    if isinstance(error, USER_ERRORS):
        return True
    return isinstance(error, LookupError) and not isinstance(error, KeyError | IndexError)


def one_line(message: str) -> str:
    """A message of several lines (a config with several wrong keys, a YAML error with its excerpt)
    as one line: its non-blank lines joined by "; " (a line that only points with ^ is dropped)."""
    lines = [line.strip() for line in message.strip().splitlines()]
    lines = [line for line in lines if line and line.strip("^ ")]
    if not lines:
        return message.strip()
    # "file: key a ...", "file: key b ..." -> "file: key a ...; key b ..."
    prefix = lines[0].split(": ", 1)[0] + ": "
    if len(lines) > 1 and prefix != lines[0] and all(line.startswith(prefix) for line in lines):
        lines = [lines[0], *(line.removeprefix(prefix) for line in lines[1:])]
    return "; ".join(lines)


def _echo_error(message: str) -> None:
    typer.echo(f"error: {one_line(message)}", err=True)


def debugging(ctx: Context) -> bool:
    """`tradewind --debug ...`: show tracebacks instead of one-line errors."""
    return bool(ctx.find_root().params.get("debug"))


class OneLineErrors(TyperGroup):
    """Every verb ends a failure with one line on stderr and no traceback (unless --debug): bad
    input (`USER_ERRORS`, a wrong option value) exits 2, anything unexpected exits 1 naming the
    exception type. Here, around every verb, so a verb added later is covered too."""

    def make_context(
        self, info_name: str | None, args: list[str], parent: Context | None = None, **extra: Any
    ) -> Context:
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click_errors.NoArgsIsHelpError:
            raise
        except click_errors.UsageError as error:  # `tradewind --bogus`
            _usage_error(error)

    def invoke(self, ctx: Context) -> Any:
        try:
            return super().invoke(ctx)
        except click_errors.NoArgsIsHelpError:
            raise
        except click_errors.UsageError as error:  # a verb's wrong option, argument or value
            _usage_error(error)
        except (typer.Exit, typer.Abort, click_errors.ClickException):
            raise
        except Exception as error:
            if debugging(ctx):
                raise
            if is_user_error(error):
                _echo_error(str(error))
                raise typer.Exit(BAD_INPUT_EXIT) from None
            first = one_line(str(error)) or "(no message)"
            _echo_error(f"{type(error).__name__}: {first} (run with --debug for the traceback)")
            raise typer.Exit(FAILED_EXIT) from None


def _usage_error(error: click_errors.UsageError) -> NoReturn:
    where = f"{error.ctx.command_path}: " if error.ctx is not None else ""
    help_hint = f" (see {error.ctx.command_path} --help)" if error.ctx is not None else ""
    _echo_error(f"{where}{error.format_message()}{help_hint}")
    raise typer.Exit(error.exit_code)


app = typer.Typer(
    cls=OneLineErrors,
    help="Tradewind: recommendation, demand forecasting and ad bidding for a cross-border marketplace.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
features_app = typer.Typer(help="The Feast feature repo: build feature tables, apply, materialize.")
app.add_typer(features_app, name="features")
schedule_app = typer.Typer(
    help="Scheduled retraining (configs/schedule.yaml): run the due jobs, or print crontab / systemd units."
)
app.add_typer(schedule_app, name="schedule")

console = Console()


@app.callback()
def main(
    data_dir: Annotated[
        Path | None, typer.Option(help="Data folder (default: configs/platform.yaml, or TRADEWIND_DATA_DIR).")
    ] = None,
    debug: Annotated[
        bool, typer.Option("--debug", help="Show the traceback of an error instead of one line.")
    ] = False,
) -> None:
    if data_dir is not None:
        os.environ["TRADEWIND_DATA_DIR"] = str(data_dir.resolve())


def _settings() -> Settings:
    return load_settings()


# ---------------------------------------------------------------------------------------------
# data


@app.command()
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
    if hold_back_days:
        from features.simulator.partitions import hold_back_days as hold_back

        held = hold_back(settings.raw_dir, hold_back_days)
        console.print(
            f"held back {len(held)} daily partitions ({held[0]} .. {held[-1]}): "
            "`tradewind ingest --partition generated`, then `tradewind retrain MODEL` takes one a run"
        )


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


@app.command()
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


@app.command("forget-user")
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

    settings = _settings()
    try:
        report = run_forget(settings, user_id, requested_by=requested_by or _os_user(), reason=reason)
    except Exception as error:
        if debugging(ctx):
            raise
        if isinstance(error, ValueError) or is_user_error(error):  # a wrong id, a data folder that is a file
            _echo_error(str(error))
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


@features_app.command("build")
def features_build() -> None:
    """Compute the feature tables (polars) from the contract tables."""
    from features.transforms import build_feature_tables

    settings = _settings()
    _require_tables(settings.contract_dir, "contract tables", "`tradewind ingest` (or `tradewind demo`)")
    started = time.perf_counter()
    rows = build_feature_tables(settings)
    for name, count in rows.items():
        console.print(f"{name}: {count:,} rows")
    console.print(f"feature tables in {settings.feature_dir} ({time.perf_counter() - started:.1f} s)")


@features_app.command("apply")
def features_apply() -> None:
    """Register entities, feature views and feature services with Feast."""
    settings = _settings()
    _require_tables(settings.feature_dir, "feature tables", "`tradewind features build`")
    from features.store import apply_definitions  # Feast: seconds to import, after the check

    for name in apply_definitions(settings):
        console.print(f"applied {name}")


@features_app.command("materialize")
def features_materialize(
    full: Annotated[bool, typer.Option(help="Reload everything instead of only what is new.")] = False,
) -> None:
    """Load the latest feature values into the online store (incremental by default)."""
    settings = _settings()
    _require_tables(settings.feature_dir, "feature tables", "`tradewind features build` and `apply`")
    from features.store import materialize

    summary = materialize(settings, incremental=not full)
    console.print(summary)


# ---------------------------------------------------------------------------------------------
# models: one set of verbs for every family (training/pipeline.py does the work)

ModelArgument = Annotated[str, typer.Argument(help="recommender, forecaster or bidder.")]
ConfigOption = Annotated[
    Path | None, typer.Option("--config", help="Family config (default: configs/<model>.yaml).")
]


@app.command()
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
def retrain(
    model: ModelArgument,
    partition: Annotated[
        str | None, typer.Option(help="Raw partition to take in (default: the oldest not yet ingested).")
    ] = None,
    config: ConfigOption = None,
    tuned: Annotated[
        bool, typer.Option("--tuned", help="Train with the best trial of `tradewind tune`.")
    ] = False,
    force: Annotated[
        bool, typer.Option(help="Retrain even if this partition was retrained already.")
    ] = False,
) -> None:
    """Ingest new data, train a challenger, promote it only if it beats the champion (configs/retrain.yaml).

    Exit codes: 0 promoted, refused or already done; 3 another retrain of MODEL is running; 1 a step
    failed (the champion is untouched; the MLflow run says which step).
    """
    from training.families import family
    from training.pipeline import load_family_config
    from training.retrain import RetrainLocked
    from training.retrain import retrain as run_retrain

    chosen = family(model)
    try:
        result = run_retrain(
            _settings(),
            chosen,
            partition=partition,
            config=load_family_config(chosen, config),
            force=force,
            use_tuned=tuned,
        )
    except RetrainLocked as error:
        _echo_error(str(error))
        raise typer.Exit(3) from None
    console.print(f"retrain {model} partition {result.partition or '(none)'}: {result.decision}")
    for reason in result.reasons:
        console.print(f"  {reason}")
    console.print(
        f"champion: version {result.champion_version}; challenger: version {result.challenger_version}; "
        f"MLflow run {result.run_id} ({result.seconds:.1f} s)"
    )


@app.command()
def tune(
    model: ModelArgument,
    trials: Annotated[
        int, typer.Option(min=1, help="Trials to run now (the study resumes where it stopped).")
    ] = 10,
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


@app.command()
def monitor(
    model: ModelArgument,
    config: Annotated[
        Path | None, typer.Option("--config", help="Monitoring config (default: configs/monitoring.yaml).")
    ] = None,
    exit_code: Annotated[
        bool,
        typer.Option("--exit-code", help="Exit 4 when a retrain is advised (for scripts and the schedule)."),
    ] = False,
    json_path: Annotated[Path | None, typer.Option("--json", help="Also write the report here.")] = None,
) -> None:
    """Drift (PSI) of the champion's features and predictions and its live accuracy; whether to retrain.

    One MLflow run `monitor-MODEL` with the PSI per feature, plots and the report. Exit codes: 0 (also
    when a retrain is advised, unless --exit-code: then 4), 2 bad input or no champion.
    """
    import json

    from training.families import family
    from training.monitoring import NoChampion, load_monitoring_config
    from training.monitoring import monitor as run_monitor
    from training.schedule import RETRAIN_ADVISED_EXIT

    monitoring_config = load_monitoring_config(str(config) if config else None)
    try:
        with console.status(f"monitoring {model}: feature drift, predictions, live accuracy"):
            result = run_monitor(_settings(), family(model), monitoring_config)
    except NoChampion as error:
        if not exit_code:
            raise
        console.print(f"{error}: retrain advised (it trains the first champion)")
        raise typer.Exit(RETRAIN_ADVISED_EXIT) from None
    print_monitor_result(result)
    if json_path is not None:
        json_path.write_text(json.dumps(result.as_dict(), indent=2, default=str) + "\n")
    if exit_code and result.should_retrain:
        raise typer.Exit(RETRAIN_ADVISED_EXIT)


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


ScheduleOption = Annotated[
    Path | None, typer.Option("--config", help="Schedule config (default: configs/schedule.yaml).")
]


@schedule_app.command("run")
def schedule_run(
    once: Annotated[
        bool, typer.Option("--once", help="Run what is due now and exit (for cron/systemd).")
    ] = False,
    config: ScheduleOption = None,
) -> None:
    """Run due jobs one at a time as subprocesses; a failed one is retried next tick (see history.jsonl)."""
    from training.schedule import FAILED, load_schedule, run_forever, runner_lock, tick

    settings = _settings()
    schedule = load_schedule(config)
    if not once:
        run_forever(settings, schedule, report=console.print)
        return
    with runner_lock(settings) as held:
        if not held:
            console.print("another `tradewind schedule run` holds the runner lock: nothing done")
            return
        records = tick(settings, schedule, report=console.print)
    if not records:
        console.print("no job due")
    if any(record["status"] in FAILED for record in records):
        raise typer.Exit(1)


@schedule_app.command("status")
def schedule_status(config: ScheduleOption = None) -> None:
    """Each job's cadence, latest and next occurrence, state and last run."""
    from datetime import UTC, datetime

    from training.schedule import job_state, load_schedule, next_occurrence, read_history

    settings = _settings()
    schedule = load_schedule(config)
    history = read_history(settings)
    now = datetime.now(UTC)
    console.print(f"schedule: {len(schedule.jobs)} jobs, cadences in {schedule.timezone}; times below in UTC")
    for job in schedule.jobs:
        state = job_state(job, history, now, schedule.timezone)
        last = state.last
        last_text = (
            f"last run {last['status']} (exit {last['exit_code']}) at {last['started'][:16]}, "
            f"log {last['log']}"
            if last
            else "never run"
        )
        console.print(
            f"{job.name}: {job.when} retrain of {job.model} at '{job.cadence}'; "
            f"occurrence {state.occurrence:%Y-%m-%d %H:%M}: {state.summary}; {last_text}; "
            f"next {next_occurrence(job, now, schedule.timezone):%Y-%m-%d %H:%M}",
            soft_wrap=True,
        )


@schedule_app.command("crontab")
def schedule_crontab(config: ScheduleOption = None) -> None:
    """Print a crontab that ticks `tradewind schedule run --once` every minute (`... | crontab -`)."""
    from training.schedule import crontab_text, load_schedule

    sys.stdout.write(crontab_text(_settings(), load_schedule(config), config))


@schedule_app.command("systemd")
def schedule_systemd(
    config: ScheduleOption = None,
    output_dir: Annotated[
        Path | None, typer.Option(help="Write the two unit files here instead of printing them.")
    ] = None,
) -> None:
    """Print (or write) tradewind-schedule.service and .timer: a oneshot tick every minute."""
    from training.schedule import load_schedule, systemd_units

    units = systemd_units(_settings(), load_schedule(config), config)
    for name, text in units.items():
        if output_dir is not None:
            output_dir.mkdir(parents=True, exist_ok=True)
            (output_dir / name).write_text(text)
            console.print(f"wrote {output_dir / name}")
        else:
            sys.stdout.write(f"# ---- {name}\n{text}\n")
    if output_dir is not None:
        console.print(
            "install: copy both to /etc/systemd/system/, then systemctl enable --now tradewind-schedule.timer"
        )


BENCHMARKS = {
    "recommender": "benchmarks.recommender",
    "forecaster": "benchmarks.forecaster",
    "bidder": "benchmarks.bidder",
    "serving": "benchmarks.serving",
    "soak": "benchmarks.soak",
    "feature-store": "benchmarks.feature_store_bench",
}


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    add_help_option=False,
)
def benchmark(
    ctx: typer.Context,
    what: Annotated[str, typer.Argument(help=", ".join(BENCHMARKS) + ".")],
) -> None:
    """Run a benchmark and print its table; options go to it (`tradewind benchmark recommender --help`)."""
    import importlib

    if what not in BENCHMARKS:
        raise InputError(f"unknown benchmark {what!r} (known: {', '.join(BENCHMARKS)})")
    with argparse_errors_as_input_errors():
        raise typer.Exit(importlib.import_module(BENCHMARKS[what]).main(list(ctx.args)) or 0)


@contextmanager
def argparse_errors_as_input_errors() -> Iterator[None]:
    """A benchmark's argparse error as one InputError line (exit 2), not usage text plus the error:
    its parser is its own (benchmarks/), so its `error` is replaced for the length of the run."""

    def one_line_error(parser: argparse.ArgumentParser, message: str) -> Any:
        raise InputError(f"{parser.prog}: {message} (see {parser.prog} --help)")

    original = argparse.ArgumentParser.error
    argparse.ArgumentParser.error = one_line_error  # type: ignore[method-assign,assignment]
    try:
        yield
    finally:
        argparse.ArgumentParser.error = original  # type: ignore[method-assign]


@app.command()
def serve(
    config: Annotated[Path, typer.Option(help="Ray Serve config file.")] = Path("serving"),
) -> None:
    """Serve /recommend, /forecast, /bid, /models and /docs locally (`serve run configs/serving.yaml`)."""
    from serving.deploy import serve_run

    raise typer.Exit(serve_run(_settings(), str(config)))


# ---------------------------------------------------------------------------------------------
# the whole flow


@app.command()
def demo(
    scale: Annotated[float, typer.Option(help="Size of the generated marketplace.")] = 1.0,
    serve: Annotated[bool, typer.Option(help="End by serving the endpoints and showing answers.")] = True,
) -> None:
    """Run the platform end to end on the embedded defaults and say where to look."""
    from training.demo import run_demo

    run_demo(_settings(), scale=scale, console=console, serve=serve)


if __name__ == "__main__":
    app()
