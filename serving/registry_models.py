"""The models a deployment serves, loaded from the MLflow registry by alias and swapped live.

`ServedModels.poll()` asks the registry which version holds each alias (`champion`, and
`challenger` when one exists). A version not yet loaded is loaded by its exact URI
(`models:/<name>/<version>`, so an alias moving again mid-load cannot mix versions), unwrapped to
its `PythonModel`, and must answer its own `smoke_request` through the deployment's real request
path before one assignment swaps it in; requests in flight keep the object they started with, so a
swap never fails a request. A version that fails to load or to answer is recorded as rejected
(with why) and never swapped in. When the registry cannot be reached the last loaded models keep
serving and the status says so.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from models.served import ServedModel, contract_gaps
from tracking.registry import CHALLENGER, CHAMPION, RegisteredVersion, load_served_model, version_for_alias

logger = logging.getLogger(__name__)

UNREACHABLE = "registry unreachable"


def limit_registry_calls(timeout_s: int, retries: int) -> None:
    """Bound every MLflow HTTP call of this process (a Serve replica is a process of its own):
    MLflow reads these variables on each request. Without them a stopped server holds each poll
    for minutes of backoff before it counts as unreachable."""
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(timeout_s)
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = str(retries)


@dataclass(frozen=True)
class LoadedModel:
    name: str
    version: int
    run_id: str | None
    python_model: ServedModel  # the plain served model (models/<domain>/served.py)
    feature_service: str | None
    loaded_at: datetime
    load_seconds: float
    description: dict[str, Any] = field(default_factory=dict)
    example_request: dict[str, Any] | None = None  # its smoke request, as it was answered

    def summary(self, alias: str) -> dict[str, Any]:
        return {
            "alias": alias,
            "version": self.version,
            "run_id": self.run_id,
            "loaded_at": self.loaded_at.isoformat(),
            "load_seconds": round(self.load_seconds, 3),
            "feature_service": self.feature_service,
            "describe": self.description,
            "example_request": self.example_request,
        }


def load_version(version: RegisteredVersion) -> LoadedModel:
    started = time.perf_counter()
    python_model = load_served_model(version.uri)
    gaps = contract_gaps(python_model)
    if gaps:
        raise TypeError(
            f"{type(python_model).__name__} lacks {', '.join(gaps)}: not the served-model contract"
        )
    description = python_model.describe()
    return LoadedModel(
        name=version.name,
        version=version.version,
        run_id=version.run_id,
        python_model=python_model,
        feature_service=getattr(python_model, "feature_service", None),
        loaded_at=datetime.now(UTC),
        load_seconds=time.perf_counter() - started,
        description=dict(description),
    )


class ServedModels:
    """The loaded model per alias of one registered model, and what the last poll found."""

    def __init__(
        self,
        registered_model: str,
        smoke_check: Callable[[LoadedModel], dict[str, Any]],
        aliases: tuple[str, ...] = (CHAMPION, CHALLENGER),
    ) -> None:
        self.registered_model = registered_model
        self.smoke_check = smoke_check
        self.aliases = aliases
        self.models: dict[str, LoadedModel] = {}  # replaced whole on every change, never mutated
        self.registry_reachable: bool | None = None
        self.last_checked: datetime | None = None
        self.last_error: str | None = None
        self.rejected: dict[int, str] = {}
        self._poll_lock = threading.Lock()

    def current(self, alias: str) -> LoadedModel | None:
        return self.models.get(alias)

    def poll(self) -> None:
        with self._poll_lock:  # the background poll and an explicit one never overlap
            self._poll()

    def _poll(self) -> None:
        found: dict[str, RegisteredVersion | None] = {}
        try:
            for alias in self.aliases:
                found[alias] = version_for_alias(self.registered_model, alias)
        except Exception as error:
            self.registry_reachable = False
            self.last_error = f"{UNREACHABLE}, serving the last loaded models: {_short(error)}"
            logger.warning("%s: %s", self.registered_model, self.last_error)
            return
        if self.registry_reachable is False:
            logger.info("%s: registry reachable again", self.registered_model)
        if self.last_error and self.last_error.startswith(UNREACHABLE):
            self.last_error = None
        self.registry_reachable = True
        self.last_checked = datetime.now(UTC)
        for alias, version in found.items():
            self._follow(alias, version)

    def _follow(self, alias: str, version: RegisteredVersion | None) -> None:
        current = self.models.get(alias)
        if version is None:
            if alias != CHAMPION and current is not None:  # challenger retired: stop splitting traffic
                self.models = {key: value for key, value in self.models.items() if key != alias}
            elif alias == CHAMPION and current is None:
                self.last_error = f"no version of {self.registered_model!r} holds the alias {alias!r}"
            return
        if current is not None and current.version == version.version:
            return
        if version.version in self.rejected:
            return
        already = next((model for model in self.models.values() if model.version == version.version), None)
        try:
            candidate = already
            if candidate is None:
                loaded = load_version(version)
                candidate = replace(loaded, example_request=self.smoke_check(loaded))
        except Exception as error:
            reason = f"version {version.version} not swapped in for {alias!r}: {_short(error)}"
            self.rejected[version.version] = reason
            self.last_error = reason
            logger.error("%s: %s", self.registered_model, reason)
            return
        self.models = {**self.models, alias: candidate}  # the swap: one assignment
        logger.info("%s: now serving version %s as %r", self.registered_model, version.version, alias)

    def status(self) -> dict[str, Any]:
        models = self.models
        return {
            "registered_model": self.registered_model,
            "variants": {alias: model.summary(alias) for alias, model in models.items()},
            "registry_reachable": self.registry_reachable,
            "last_checked": self.last_checked.isoformat() if self.last_checked else None,
            "last_error": self.last_error,
            "rejected": {str(version): reason for version, reason in self.rejected.items()},
        }


class Poller:
    """Calls `poll` every `interval()` seconds on a daemon thread (loading is blocking work)."""

    def __init__(self, name: str, poll: Callable[[], None], interval: Callable[[], float]) -> None:
        self._poll = poll
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self._interval()):
            try:
                self._poll()
            except Exception:  # a poll that breaks must not end polling
                logger.exception("background poll failed")


def _short(error: BaseException, limit: int = 400) -> str:
    text = f"{type(error).__name__}: {error}".strip()
    first = text.splitlines()[0] if text else type(error).__name__
    return first if len(first) <= limit else first[: limit - 3] + "..."
