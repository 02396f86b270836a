"""The MLflow model registry, written once for every model family.

A trained model is logged in the active run and registered under a name (one per family), which
gives it a new version. Aliases name the versions that matter: serving loads
`models:/<name>@champion`, and `promote` moves `champion` while pointing `previous_champion` at the
version it replaced, so a rollback is `promote(name, previous.version)`.

Call `tracking.runs.configure_tracking(settings)` first (`tracked_run` does it); registering also
needs an active run, so every version can be traced to the run, its parameters and its data lineage.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import io
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightgbm
import mlflow
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature, infer_signature
from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, ErrorCode
from mlflow.pyfunc import PyFuncModel, PythonModel

from models.served import ServedModel
from tracking.runs import FAMILY_TAG, active_run_id, tracking_client

CHAMPION = "champion"
CHALLENGER = "challenger"  # the alias a trained version gets while a champion serves
PREVIOUS_PREFIX = "previous_"

# Pinned from this environment instead of letting MLflow infer requirements: inference loads the model
# in a subprocess and costs seconds per model (2.5 s for a toy pyfunc, 4 s for a LightGBM booster).
_CORE_REQUIREMENTS = ("mlflow", "cloudpickle", "numpy", "pandas")

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RegisteredVersion:
    """One version of a registered model, as the platform needs it."""

    name: str
    version: int
    run_id: str | None
    source: str
    aliases: tuple[str, ...] = ()
    tags: Mapping[str, str] = field(default_factory=dict)

    @property
    def uri(self) -> str:
        """`models:/<name>/<version>`: this exact version, whatever the aliases do later."""
        return f"models:/{self.name}/{self.version}"

    @property
    def family(self) -> str | None:
        return self.tags.get(FAMILY_TAG)


def alias_uri(name: str, alias: str = CHAMPION) -> str:
    """`models:/<name>@<alias>`: whichever version holds the alias when it is loaded."""
    return f"models:/{name}@{alias}"


def previous_alias(alias: str) -> str:
    return f"{PREVIOUS_PREFIX}{alias}"


def register_model(
    name: str,
    model: PythonModel | lightgbm.Booster,
    input_example: Any,
    *,
    signature: ModelSignature | None = None,
    output_example: Any = None,
    artifacts: Mapping[str, str | Path] | None = None,
    extra_requirements: Sequence[str] = (),
    tags: Mapping[str, str] | None = None,
) -> RegisteredVersion:
    """Log `model` in the active run and register it as a new version of `name`.

    `model` is a `mlflow.pyfunc.PythonModel` (its `artifacts` files are copied into the model and
    reach `load_context` as `context.artifacts`) or a LightGBM booster (saved in LightGBM's own text
    format, no pickle). The signature is `signature`, else inferred from `input_example` and
    `output_example`, else inferred by MLflow running the saved model on `input_example`; a model
    without one is refused, because serving validates requests against it. So is a model that fails
    to predict `input_example` once saved and loaded back, as serving would load it.

    The version is tagged with `tags` and the run's model family. Pip requirements are this
    environment's versions of mlflow, cloudpickle, numpy, pandas (and lightgbm for a booster) plus
    `extra_requirements`.
    """
    run_id = active_run_id()
    if signature is None and output_example is not None:
        signature = infer_signature(input_example, output_example)
    log_arguments: dict[str, Any] = {
        "name": name,
        "signature": signature,
        "input_example": input_example,
    }
    with _quiet_model_logging():
        if isinstance(model, PythonModel):
            info = mlflow.pyfunc.log_model(
                python_model=model,
                artifacts={key: str(path) for key, path in artifacts.items()} if artifacts else None,
                pip_requirements=_requirements(_CORE_REQUIREMENTS, extra_requirements),
                **log_arguments,
            )
        elif isinstance(model, lightgbm.Booster):
            if artifacts:
                raise ValueError("artifacts are only supported for a PythonModel; a booster is one file")
            info = mlflow.lightgbm.log_model(
                model,
                pip_requirements=_requirements((*_CORE_REQUIREMENTS, "lightgbm"), extra_requirements),
                **log_arguments,
            )
        else:
            raise TypeError(
                f"cannot register a {type(model).__name__}: pass a lightgbm.Booster or wrap the model "
                "in a mlflow.pyfunc.PythonModel"
            )
    _check_round_trip(name, info.model_uri, input_example)
    if info.signature is None:
        raise ValueError(
            f"model {name!r} has no signature and MLflow could not infer one from the input example: "
            "pass signature= or output_example="
        )

    client = tracking_client()
    family = client.get_run(run_id).data.tags.get(FAMILY_TAG)
    version_tags = {**(tags or {}), **({FAMILY_TAG: family} if family else {})}
    with _mlflow_chatter_dropped():
        created = mlflow.register_model(info.model_uri, name, tags=version_tags)
    logger.info("registered %s version %s from run %s", name, created.version, run_id)
    return _registered_version(client.get_model_version(name, str(created.version)))


def set_alias(name: str, alias: str, version: int | str) -> None:
    tracking_client().set_registered_model_alias(name, alias, str(version))


def version_for_alias(name: str, alias: str) -> RegisteredVersion | None:
    """The version holding `alias`; None when no version does or no model `name` is registered."""
    client = tracking_client()
    try:
        registered = client.get_registered_model(name)
    except MlflowException as error:
        if error.error_code == ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
            return None
        raise
    # read the alias table rather than calling get_model_version_by_alias: a missing alias raises
    # INVALID_PARAMETER_VALUE there, indistinguishable from a real error without parsing the message
    version = registered.aliases.get(alias)
    if version is None:
        return None
    return _registered_version(client.get_model_version(name, str(version)))


def load_served_model(uri: str) -> ServedModel:
    """What serving holds: the plain served model inside a registered `tracking.pyfunc.ServedPyfunc`."""
    unwrapped = mlflow.pyfunc.load_model(uri).unwrap_python_model()
    return getattr(unwrapped, "served", unwrapped)


def load_by_alias(name: str, alias: str = CHAMPION) -> PyFuncModel:
    """Load `models:/<name>@<alias>` as a pyfunc model; LookupError when no version holds the alias."""
    if version_for_alias(name, alias) is None:
        raise LookupError(f"no version of model {name!r} has the alias {alias!r}")
    return mlflow.pyfunc.load_model(alias_uri(name, alias))


def promote(name: str, version: int | str, alias: str = CHAMPION) -> RegisteredVersion | None:
    """Give `alias` to `version`; the version that held it keeps `previous_<alias>`.

    Returns the version that lost the alias, or None when the alias was free or `version` already
    held it (then nothing changes). `previous_<alias>` is moved before `alias`, so the outgoing version
    is reachable by one alias or the other throughout.
    """
    current = version_for_alias(name, alias)
    if current is not None and current.version == int(version):
        return None
    if current is not None:
        set_alias(name, previous_alias(alias), current.version)
    set_alias(name, alias, version)
    return current


def _check_round_trip(name: str, model_uri: str, input_example: Any) -> None:
    # MLflow only warns when the saved model fails on its input example; a model that cannot answer
    # after a save and load would fail in serving, so it is not registered.
    try:
        mlflow.pyfunc.load_model(model_uri).predict(input_example)
    except Exception as error:
        raise RuntimeError(
            f"model {name!r} fails on its input example once saved and loaded ({model_uri}): {error}"
        ) from error


def _registered_version(version: ModelVersion) -> RegisteredVersion:
    return RegisteredVersion(
        name=version.name,
        version=int(version.version),
        run_id=version.run_id,
        source=version.source,
        aliases=tuple(version.aliases),
        tags=dict(version.tags),
    )


def pinned_requirements(packages: Sequence[str]) -> tuple[str, ...]:
    """`package==<version installed here>` for each package: a model's extra requirements."""
    return tuple(f"{package}=={importlib.metadata.version(package)}" for package in packages)


def _requirements(packages: Sequence[str], extra: Sequence[str]) -> list[str]:
    return [*pinned_requirements(packages), *extra]


class _DropMessage(logging.Filter):
    def __init__(self, fragment: str) -> None:
        super().__init__()
        self.fragment = fragment

    def filter(self, record: logging.LogRecord) -> bool:
        return self.fragment not in record.getMessage()


@contextlib.contextmanager
def _quiet_model_logging() -> Iterator[None]:
    # MLflow warns on every PythonModel logged as an object that it is pickled; that is the choice
    # made here on purpose (models stay plain classes in models/, not "models from code" files).
    pyfunc_logger = logging.getLogger("mlflow.pyfunc")
    pickle_notice = _DropMessage("serialized using CloudPickle")
    pyfunc_logger.addFilter(pickle_notice)
    try:
        yield
    finally:
        pyfunc_logger.removeFilter(pickle_notice)


_REGISTRATION_CHATTER = (
    "Successfully registered model",
    "already exists. Creating a new version",
    "Created version",
)


@contextlib.contextmanager
def _mlflow_chatter_dropped() -> Iterator[None]:
    # mlflow.register_model prints its progress straight to stderr (not through a logger), so it
    # cannot be filtered: capture it and pass on anything that is not the usual progress lines.
    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured):
            yield
    finally:
        for line in captured.getvalue().splitlines():
            if line.strip() and not any(chatter in line for chatter in _REGISTRATION_CHATTER):
                logger.warning("%s", line)
