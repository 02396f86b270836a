"""The one training flow every model family runs: training set -> train -> evaluate -> log -> register.

A model family (recommender, forecaster, bidder) is a `Family`: it says which config it reads, which
Feast feature service it uses, how its training set is built, how a model is fitted with given
hyperparameters, how a fitted model is evaluated, and which hyperparameters Optuna may search. This
module does the rest once for all of them:

- `train(settings, family)`: one MLflow run with params, data lineage, metrics, plots and tables,
  the model registered with signature and input example, and an alias set on the new version
  (`champion` for the first version of a model or when asked, `challenger` otherwise);
- `tune(settings, family, trials)`: an Optuna study kept in SQLite under the data folder (it resumes
  where it stopped), each trial a nested MLflow run, with pruning on the values a family reports
  while it fits; the best parameters are what `train(..., use_tuned=True)` trains with.

A family's model knows nothing of MLflow: `fit` returns a `TrainedModel` holding an
`mlflow.pyfunc.PythonModel` wrapper, which is what serving loads by alias.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel

from configs import load_config
from configs.families import FamilyName
from configs.settings import Settings
from models.terminal_progress import progress_on_terminal
from tracking.registry import CHALLENGER, CHAMPION, RegisteredVersion, promote, register_model, set_alias
from tracking.runs import (
    log_data_lineage,
    log_figure,
    log_metrics,
    log_params,
    log_table,
    tracked_run,
)

if TYPE_CHECKING:
    import optuna
    import pandas as pd
    import polars as pl
    from matplotlib.figure import Figure
    from mlflow.pyfunc import PythonModel

TUNED_ON_TAG = "tradewind.tuned_on"  # "validation", or "holdout" when a family has no validation split
# a family calls report(step, value) while it fits; tuning turns that into Optuna pruning
Reporter = Callable[[int, float], None]
PromotePolicy = Literal["if_first", "always", "never"]

logger = logging.getLogger(__name__)


@dataclass
class TrainingSet:
    """What a family's `fit` and `evaluate` read: the data, and where it came from."""

    data: Any  # the family's own training and holdout data
    lineage: Mapping[str, str]  # contract table -> content digest (or partitions) the set was built from
    summary: Mapping[str, float] = field(default_factory=dict)  # rows, users, series... logged as metrics


@dataclass
class TrainedModel:
    """A fitted model and its MLflow packaging."""

    python_model: PythonModel
    input_example: pd.DataFrame  # a request serving could send; also the registry's smoke test
    output_example: Any = None  # for the signature, when MLflow cannot infer it by running the model
    artifacts: Mapping[str, str | Path] = field(default_factory=dict)
    extra_requirements: tuple[str, ...] = ()
    learning_curve: Mapping[str, list[float]] = field(default_factory=dict)  # metric -> values per step
    # the score on a validation split cut before the evaluation holdout, in the primary metric's
    # direction; tuning optimises it, so the holdout figures stay unseen by the search
    validation_score: float | None = None


@dataclass
class Evaluation:
    """A fitted model's scores on the holdout, beside its baselines."""

    metrics: Mapping[str, Any]  # nested mappings become dotted metric names
    primary_metric: str  # a key of the flattened `metrics`: what tuning and promotion compare
    higher_is_better: bool
    figures: Mapping[str, Figure] = field(default_factory=dict)
    tables: Mapping[str, pl.DataFrame] = field(default_factory=dict)

    @property
    def primary(self) -> float:
        value = _flat(self.metrics).get(self.primary_metric)
        if value is None:
            raise KeyError(f"primary metric {self.primary_metric!r} is not among the evaluation's metrics")
        return float(value)


@dataclass(frozen=True)
class HoldoutComparison:
    """The champion and a challenger scored on the same latest holdout: what the retraining gate
    (training/retrain.py) decides on."""

    metric: str  # e.g. "ndcg@10", "wape", "pct_of_optimum"
    higher_is_better: bool
    champion: float
    challenger: float
    holdout: str  # what was scored, in words: period, users / series / days, rows
    details: Mapping[str, float] = field(default_factory=dict)  # logged beside the two scores

    def improvement(self) -> float:
        """The challenger's relative gain over the champion, positive when it is better."""
        gain = self.challenger - self.champion if self.higher_is_better else self.champion - self.challenger
        return gain / max(abs(self.champion), 1e-12)


class NoHoldout(LookupError):
    """A family's `compare_on_holdout` has nothing to score on (no actuals since the champion was
    trained, say); the retraining gate refuses the challenger with this message."""


@dataclass(frozen=True)
class Family:
    """A model family as a record: its one name, its config, and the functions of its rooms
    (`training/<name>/{data,fit,evaluate,gate,monitor}.py`); each family's `family.py` declares one.
    The flow below (train, tune) and retraining, monitoring and the CLI are written once on it."""

    names: FamilyName
    config_model: type[BaseModel]
    higher_is_better: bool  # of the primary metric: the tuning direction
    # (settings, config) -> the training and holdout data, with lineage
    training_set: Callable[[Settings, Any], TrainingSet]
    # (training_set, config, params, report) -> a fitted, packaged model
    fit: Callable[[TrainingSet, Any, Mapping[str, Any], Reporter | None], TrainedModel]
    # (trained, training_set, config) -> holdout scores beside the baselines
    evaluate: Callable[[TrainedModel, TrainingSet, Any], Evaluation]
    # (config) -> the hyperparameters trained with unless tuned or given
    default_params: Callable[[Any], dict[str, Any]]
    # (trial, config) -> the hyperparameters Optuna may search
    search_space: Callable[[optuna.Trial, Any], dict[str, Any]]
    # (champion, challenger, challenger_params, training_set, config) -> both served models scored
    # on the latest holdout of `training_set`, with the same metric; neither may have seen it
    compare_on_holdout: Callable[[Any, Any, Mapping[str, Any], TrainingSet, Any], HoldoutComparison]
    # (settings, champion, monitoring config) -> the champion's live accuracy and drift rows
    live_check: Callable[..., Any]

    @property
    def name(self) -> str:
        """The one name: CLI noun, MLflow family tag, config file, feature service."""
        return self.names.name

    @property
    def registered_model(self) -> str:
        return self.names.registered_model

    @property
    def config_name(self) -> str:
        return self.names.config_name

    @property
    def feature_service(self) -> str:
        return self.names.feature_service


@dataclass(frozen=True)
class TrainResult:
    run_id: str
    evaluation: Evaluation
    params: Mapping[str, Any]
    version: RegisteredVersion | None  # None when not registered (tuning trials)
    aliases: tuple[str, ...] = ()
    seconds: float = 0.0


def load_family_config(family: Family, path: str | Path | None = None) -> Any:
    """The family's YAML config (`configs/<family>.yaml` by default), validated."""
    return load_config(path or family.config_name, family.config_model)


def train(
    settings: Settings,
    family: Family,
    config: Any = None,
    *,
    params: Mapping[str, Any] | None = None,
    use_tuned: bool = False,
    register: bool = True,
    promote_policy: PromotePolicy = "if_first",
    training_set: TrainingSet | None = None,
    run_name: str | None = None,
    nested: bool = False,
) -> TrainResult:
    """Train, evaluate, log and (by default) register one model of `family`.

    Parameters are the family's defaults, overlaid by the best trial of its tuning study when
    `use_tuned` is set, overlaid by `params`. The new version gets `champion` when no version holds
    it yet (or always, with `promote_policy="always"`), else `challenger`: moving the champion past a
    version that is already serving is the retraining gate's decision, not a side effect of training.
    `nested` makes the run a child of the active one (a retrain's parent run).
    """
    config = config if config is not None else load_family_config(family)
    chosen = dict(family.default_params(config))
    if use_tuned:
        chosen.update(best_tuned_params(settings, family))
    chosen.update(params or {})
    started = time.perf_counter()
    with tracked_run(settings, run_name or f"train-{family.name}", family.name, nested=nested) as run:
        training_set = training_set or family.training_set(settings, config)
        _log_inputs(family, config, chosen, training_set)
        trained = family.fit(training_set, config, chosen, None)
        evaluation = family.evaluate(trained, training_set, config)
        log_evaluation(evaluation, trained)
        version: RegisteredVersion | None = None
        aliases: tuple[str, ...] = ()
        if register:
            version = register_model(
                family.registered_model,
                trained.python_model,
                trained.input_example,
                output_example=trained.output_example,
                artifacts=trained.artifacts or None,
                extra_requirements=trained.extra_requirements,
                tags={"primary_metric": evaluation.primary_metric, "primary_value": f"{evaluation.primary}"},
            )
            aliases = _set_aliases(family.registered_model, version, promote_policy)
        return TrainResult(
            run.info.run_id, evaluation, chosen, version, aliases, time.perf_counter() - started
        )


def _set_aliases(name: str, version: RegisteredVersion, policy: PromotePolicy) -> tuple[str, ...]:
    from tracking.registry import version_for_alias

    champion = version_for_alias(name, CHAMPION)
    if policy == "always" or (policy == "if_first" and champion is None):
        promote(name, version.version, CHAMPION)
        return (CHAMPION,)
    set_alias(name, CHALLENGER, version.version)
    return (CHALLENGER,)


def _log_inputs(family: Family, config: Any, params: Mapping[str, Any], training_set: TrainingSet) -> None:
    log_params({"config": config, "params": dict(params)})
    log_data_lineage(family.feature_service, training_set.lineage)
    if training_set.summary:
        log_metrics({"training_set": dict(training_set.summary)})


def log_evaluation(evaluation: Evaluation, trained: TrainedModel | None = None) -> None:
    """Metrics, plots and tables of an evaluation (and a model's learning curve) in the active run."""
    log_metrics(evaluation.metrics)
    if trained is not None:
        for metric, values in trained.learning_curve.items():
            for step, value in enumerate(values):
                if math.isfinite(value):
                    log_metrics({f"learning_curve.{metric}": value}, step=step)
    for name, figure in evaluation.figures.items():
        log_figure(figure, name)
    for name, table in evaluation.tables.items():
        log_table(table, name)


# ---------------------------------------------------------------------------------------------
# tuning


def study_storage(settings: Settings) -> str:
    """Optuna's storage: one SQLite file under the data folder (embedded), so a study resumes."""
    folder = settings.root / "optuna"
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'studies.db'}"


def study_name(family: Family) -> str:
    return f"tune-{family.name}"


@dataclass(frozen=True)
class TuneResult:
    parent_run_id: str
    best_params: Mapping[str, Any]
    best_value: float
    trials_run: int
    trials_total: int
    pruned: int


def tune(
    settings: Settings,
    family: Family,
    trials: int,
    config: Any = None,
    *,
    timeout_s: float | None = None,
    seed: int = 0,
) -> TuneResult:
    """Run `trials` more trials of the family's study; each is a nested MLflow run of one parent.

    The training set is built once and shared by the trials. A trial is scored on the family's
    validation split (`TrainedModel.validation_score`), never on the holdout its evaluation reports,
    unless the family has none (the run is then tagged `tradewind.tuned_on=holdout`). A trial whose
    reported values fall behind the median of earlier trials at the same step is pruned (Optuna's
    median pruner). A family's `fit` gets a `report` only while tuning.
    """
    import mlflow
    import optuna

    if trials < 1:
        raise ValueError(f"--trials must be at least 1, got {trials}")
    config = config if config is not None else load_family_config(family)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with tracked_run(settings, f"tune-{family.name}", family.name) as parent:
        training_set = family.training_set(settings, config)
        log_data_lineage(family.feature_service, training_set.lineage)
        defaults = family.default_params(config)
        study_options = {
            "study_name": study_name(family),
            "storage": study_storage(settings),
            "load_if_exists": True,
            "direction": "maximize" if family.higher_is_better else "minimize",
        }
        earlier_trials = len(optuna.create_study(**study_options).trials)
        # a resumed study must not replay the suggestions of its first session: seed past them
        study = optuna.create_study(
            **study_options,
            sampler=optuna.samplers.TPESampler(seed=seed + earlier_trials),
            pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1),
        )

        def objective(trial: optuna.Trial) -> float:
            params = {**defaults, **family.search_space(trial, config)}
            with tracked_run(
                settings,
                f"trial-{trial.number}",
                family.name,
                nested=True,
                tags={"optuna.trial": str(trial.number)},
            ):
                log_params({"params": params})

                def report(step: int, value: float) -> None:
                    trial.report(value, step)
                    log_metrics({"intermediate": value}, step=step)
                    if trial.should_prune():
                        mlflow.set_tag("optuna.state", "pruned")
                        raise optuna.TrialPruned(f"pruned at step {step} ({value:.5g})")

                trained = family.fit(training_set, config, params, report)
                evaluation = family.evaluate(trained, training_set, config)
                log_evaluation(evaluation)
                if trained.validation_score is not None:
                    mlflow.set_tag(TUNED_ON_TAG, "validation")
                    log_metrics({"validation_score": trained.validation_score})
                    return trained.validation_score
                # no validation split of its own: the search sees the holdout, and the run says so
                mlflow.set_tag(TUNED_ON_TAG, "holdout")
                logger.warning(
                    "%s gives no validation score: trial %d is scored on the evaluation holdout",
                    family.name,
                    trial.number,
                )
                return evaluation.primary

        study.optimize(
            objective, n_trials=trials, timeout=timeout_s, catch=(), show_progress_bar=progress_on_terminal()
        )
        finished = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        pruned = sum(t.state == optuna.trial.TrialState.PRUNED for t in study.trials)
        if not finished:
            raise RuntimeError(f"study {study.study_name}: no trial completed ({pruned} pruned)")
        best = study.best_trial
        log_params({"best": best.params, "study": study.study_name, "direction": study.direction.name})
        log_metrics({"best_value": best.value, "trials": len(study.trials), "pruned": pruned})
        return TuneResult(
            parent.info.run_id, dict(best.params), float(best.value), trials, len(study.trials), pruned
        )


def best_tuned_params(settings: Settings, family: Family) -> dict[str, Any]:
    """The best trial's parameters of the family's study; an error naming the command to run."""
    import optuna

    try:
        study = optuna.load_study(study_name=study_name(family), storage=study_storage(settings))
        return dict(study.best_trial.params)
    except (KeyError, ValueError):
        raise LookupError(
            f"no completed tuning trial for {family.name}: run `tradewind tune {family.name} "
            "--trials N` first"
        ) from None


def _flat(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in metrics.items():
        if isinstance(value, Mapping):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
