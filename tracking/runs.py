"""MLflow experiment tracking, written once for every model family.

`configure_tracking(settings)` points MLflow at the platform's store: in the embedded default a SQLite
file with artifacts in a local folder beside it, no server needed; in scale-out whatever URI the
settings give. Training code then works inside `tracked_run(...)` and records what it did with the
`log_*` helpers here. Every helper refuses to run outside a run, because MLflow would otherwise start
a stray run in the default experiment without a word.

Registration and aliases live in `tracking.registry`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

import mlflow
import pandas as pd
import polars as pl
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, ErrorCode
from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH, MAX_TAG_VAL_LENGTH
from pydantic import BaseModel

from configs.settings import Settings

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# "data" marks the runs that record a data snapshot (ingest counts), not a model
ModelFamily = Literal[
    "recommender", "forecaster", "bidder", "data"
]  # configs/families.py names, and data jobs
TableFormat = Literal["csv", "parquet", "json"]

FAMILY_TAG = "tradewind.family"
FEATURE_SERVICE_TAG = "tradewind.feature_service"
SNAPSHOT_TAG_PREFIX = "tradewind.snapshot."
PLOTS_DIR = "plots"
TABLES_DIR = "tables"
LINEAGE_FILE = "lineage.json"

# mlflow.set_tracking_uri/set_registry_uri also export these variables, and Settings reads
# MLFLOW_TRACKING_URI as an override: left in place, the first configured store would hijack every
# later Settings in the process (another data dir, the next test).
_URI_ENVIRONMENT_VARIABLES = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")

logger = logging.getLogger(__name__)

_configured_uri: str | None = None


def configure_tracking(settings: Settings) -> str:
    """Point MLflow tracking and registry at `settings`' store; return the experiment id. Idempotent.

    With a SQLite store the experiment's artifacts go to `settings.mlflow_artifact_root`, so runs and
    models stay in local files beside the database. With a server the server decides.
    """
    global _configured_uri
    uri = settings.mlflow_tracking_uri
    database = _sqlite_database(uri)
    if database is not None:
        database.parent.mkdir(parents=True, exist_ok=True)
    _quiet_mlflow_logs()
    with _environment_kept(_URI_ENVIRONMENT_VARIABLES):
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
    _configured_uri = uri

    expected_artifacts = settings.mlflow_artifact_root.as_uri() if database is not None else None
    return _ensure_experiment(mlflow.MlflowClient(), settings.mlflow.experiment, expected_artifacts)


def tracking_client() -> mlflow.MlflowClient:
    """A client on the store chosen by `configure_tracking`; an error if it has not been called."""
    if _configured_uri is None:
        raise RuntimeError("MLflow is not configured: call tracking.runs.configure_tracking(settings)")
    return mlflow.MlflowClient(tracking_uri=_configured_uri, registry_uri=_configured_uri)


@contextlib.contextmanager
def tracked_run(
    settings: Settings,
    run_name: str,
    family: ModelFamily,
    tags: Mapping[str, str] | None = None,
    nested: bool = False,
) -> Iterator[mlflow.ActiveRun]:
    """Start an MLflow run in the platform experiment, tagged with the model family.

    An exception inside the block ends the run as FAILED and propagates. `nested=True` makes the run a
    child of the active one (trials of a tuning study, for example).
    """
    if family not in get_args(ModelFamily):
        raise ValueError(f"unknown model family {family!r}; expected one of {get_args(ModelFamily)}")
    experiment_id = configure_tracking(settings)
    run_tags = {**(tags or {}), FAMILY_TAG: family}
    with mlflow.start_run(
        experiment_id=experiment_id, run_name=run_name, nested=nested, tags=run_tags
    ) as run:
        yield run


def active_run_id() -> str:
    """The id of the active run; an error outside `tracked_run`."""
    run = mlflow.active_run()
    if run is None:
        raise RuntimeError("no active MLflow run: log inside `with tracked_run(...)`")
    return run.info.run_id


def log_data_lineage(feature_service: str, snapshot: Mapping[str, str | Sequence[str]]) -> None:
    """Record which Feast feature service and which snapshot of the contract tables the run used.

    `snapshot` maps a table name to a content hash or to the partitions read. Each entry becomes a
    searchable tag `tradewind.snapshot.<table>` (a sha256 of the value when it is too long for a tag);
    the full record is also written as the artifact `lineage.json`.
    """
    run_id = active_run_id()
    tags = {FEATURE_SERVICE_TAG: feature_service}
    for table, value in snapshot.items():
        text = value if isinstance(value, str) else ",".join(value)
        if len(text) > MAX_TAG_VAL_LENGTH:
            text = "sha256:" + hashlib.sha256(text.encode()).hexdigest()
        tags[SNAPSHOT_TAG_PREFIX + table] = text
    mlflow.set_tags(tags)
    record = {
        "feature_service": feature_service,
        "snapshot": {
            table: value if isinstance(value, str) else list(value) for table, value in snapshot.items()
        },
    }
    mlflow.MlflowClient().log_dict(run_id, record, LINEAGE_FILE)


def flatten_params(params: Mapping[str, Any] | BaseModel, prefix: str = "") -> dict[str, str]:
    """Nested mappings, pydantic models and dataclasses become dotted keys with string values.

    Lists and tuples stay one value (JSON), since their items are not separate settings.
    """
    if isinstance(params, BaseModel):
        params = params.model_dump(mode="json")
    flat: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            value = dataclasses.asdict(value)
        if isinstance(value, BaseModel | Mapping):
            flat.update(flatten_params(value, prefix=f"{name}."))
        elif isinstance(value, list | tuple):
            flat[name] = json.dumps(value, default=str)
        else:
            flat[name] = str(value)
    return flat


def log_params(params: Mapping[str, Any] | BaseModel) -> dict[str, str]:
    """Log parameters, flattened by `flatten_params`; returns what was logged."""
    run_id = active_run_id()
    flat = flatten_params(params)
    for name, value in flat.items():
        if len(value) > MAX_PARAM_VAL_LENGTH:
            raise ValueError(
                f"parameter {name!r} is {len(value)} characters, over MLflow's limit of "
                f"{MAX_PARAM_VAL_LENGTH}: log it as an artifact instead"
            )
    mlflow.log_params(flat, run_id=run_id)
    return flat


def log_metrics(metrics: Mapping[str, Any], step: int | None = None) -> None:
    """Log metrics (nested mappings flattened to dotted names); NaN or infinity is an error.

    A non-finite metric nearly always means a broken evaluation (an empty slice, a division by zero);
    MLflow would store it silently and a promotion gate would then compare nonsense. Nothing is logged
    unless every value is valid.
    """
    run_id = active_run_id()
    values: dict[str, float] = {}
    for name, raw in _flatten_metrics(metrics).items():
        try:
            value = float(raw)
        except (TypeError, ValueError):
            raise TypeError(f"metric {name!r} is not a number: {raw!r}") from None
        if math.isnan(value):
            raise ValueError(f"metric {name!r} is NaN")
        if math.isinf(value):
            raise ValueError(f"metric {name!r} is infinite ({value})")
        values[name] = value
    mlflow.log_metrics(values, step=step, run_id=run_id)


def log_figure(fig: Figure, name: str) -> str:
    """Save a matplotlib figure as `plots/<name>.png` in the run, then close it; returns the path."""
    import matplotlib.pyplot as plt  # here, so that serving never pays for matplotlib

    artifact_file = f"{PLOTS_DIR}/{_with_suffix(name, '.png')}"
    try:
        mlflow.MlflowClient().log_figure(
            active_run_id(), fig, artifact_file, save_kwargs={"bbox_inches": "tight"}
        )
    finally:
        plt.close(fig)
    return artifact_file


def log_table(frame: pl.DataFrame | pd.DataFrame, name: str, file_format: TableFormat = "csv") -> str:
    """Save a polars or pandas frame as `tables/<name>.<format>` in the run; returns the path.

    CSV (the default) previews in the MLflow UI; parquet keeps the column types exactly. A pandas index
    that carries information (anything but a plain range) is written as columns.
    """
    run_id = active_run_id()
    if isinstance(frame, pd.DataFrame):
        frame = pl.from_pandas(frame, include_index=not isinstance(frame.index, pd.RangeIndex))
    file_name = _with_suffix(name, f".{file_format}")
    with tempfile.TemporaryDirectory() as folder:
        local = Path(folder) / file_name
        if file_format == "csv":
            frame.write_csv(local)
        elif file_format == "parquet":
            frame.write_parquet(local)
        else:
            frame.write_json(local)
        mlflow.MlflowClient().log_artifact(run_id, str(local), artifact_path=TABLES_DIR)
    return f"{TABLES_DIR}/{file_name}"


def _ensure_experiment(client: mlflow.MlflowClient, name: str, artifact_location: str | None) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        try:
            return client.create_experiment(name, artifact_location=artifact_location)
        except MlflowException as error:
            # another process (a tuning worker) created it between our lookup and our create
            if error.error_code != ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
                raise
            experiment = client.get_experiment_by_name(name)
            assert experiment is not None
    if experiment.lifecycle_stage == "deleted":
        client.restore_experiment(experiment.experiment_id)
    if artifact_location is not None and experiment.artifact_location != artifact_location:
        logger.warning(
            "MLflow experiment %r keeps its artifacts in %s, not %s (was the data folder moved?)",
            name,
            experiment.artifact_location,
            artifact_location,
        )
    return experiment.experiment_id


def _sqlite_database(uri: str) -> Path | None:
    """The database file of a `sqlite:///<path>` URI, None for any other store."""
    prefix = "sqlite:///"
    if not uri.startswith(prefix) or len(uri) == len(prefix):
        return None
    return Path(uri[len(prefix) :].split("?", 1)[0])


def _quiet_mlflow_logs() -> None:
    # MLflow logs INFO chatter on routine calls (database migrations, input-example validation) and
    # draws a progress bar for every model it copies out of the local artifact folder. Warnings and
    # errors still show; MLFLOW_LOGGING_LEVEL=INFO and MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR=true
    # bring the rest back.
    if not os.environ.get("MLFLOW_LOGGING_LEVEL"):
        logging.getLogger("mlflow").setLevel(logging.WARNING)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # no machine of this platform is meant to call out to the internet
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


@contextlib.contextmanager
def _environment_kept(names: Sequence[str]) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in names}
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _flatten_metrics(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in metrics.items():
        if isinstance(value, Mapping):
            flat.update(_flatten_metrics(value, prefix=f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _with_suffix(name: str, suffix: str) -> str:
    return name if name.endswith(suffix) else f"{name}{suffix}"
