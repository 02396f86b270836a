"""The model verbs, one set for every family: train, retrain, tune, monitor (training/ does the
work; `training.families.family(name)` picks the family)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli.errors import echo_error
from cli.reports import console, print_monitor_result, print_train_result
from configs.settings import load_settings

ModelArgument = Annotated[str, typer.Argument(help="recommender, forecaster or bidder.")]
ConfigOption = Annotated[
    Path | None, typer.Option("--config", help="Family config (default: configs/<model>.yaml).")
]
RETRAIN_LOCKED_EXIT = 3


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
        load_settings(),
        chosen,
        load_family_config(chosen, config),
        use_tuned=tuned,
        promote_policy="always" if promote else "if_first",
    )
    print_train_result(result)


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
            load_settings(),
            chosen,
            partition=partition,
            config=load_family_config(chosen, config),
            force=force,
            use_tuned=tuned,
        )
    except RetrainLocked as error:
        echo_error(str(error))
        raise typer.Exit(RETRAIN_LOCKED_EXIT) from None
    console.print(f"retrain {model} partition {result.partition or '(none)'}: {result.decision}")
    for reason in result.reasons:
        console.print(f"  {reason}")
    console.print(
        f"champion: version {result.champion_version}; challenger: version {result.challenger_version}; "
        f"MLflow run {result.run_id} ({result.seconds:.1f} s)"
    )


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
    result = run_tune(load_settings(), chosen, trials, load_family_config(chosen, config), timeout_s=timeout)
    console.print(
        f"study tune-{model}: {result.trials_total} trials in all ({result.pruned} pruned), "
        f"best value {result.best_value:.4f} with {dict(result.best_params)}"
    )
    console.print(f"MLflow parent run {result.parent_run_id}; train with it: tradewind train {model} --tuned")


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
            result = run_monitor(load_settings(), family(model), monitoring_config)
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
