"""Fixtures shared across test folders: one tiny marketplace and one local Ray Serve per session."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from marketplace_worlds import build_world

from configs.settings import Settings

# LightGBM's OpenMP threads wait passively instead of spinning: on 2 shared cores spinning makes the
# suite crawl (as cli/app.py does for the CLI)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


# settings read these as overrides (configs/settings.py): one left behind by a test, or by MLflow
# itself while a test ran, would point every later test at that test's store
STORE_OVERRIDES = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "TRADEWIND_DATA_DIR", "TRADEWIND_MODE")


@pytest.fixture(autouse=True)
def store_overrides_restored() -> Iterator[None]:
    """Each test ends with the store-choosing variables as it found them."""
    before = {name: os.environ.get(name) for name in STORE_OVERRIDES}
    yield
    for name, value in before.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(scope="session")
def tiny_marketplace(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Generated, ingested, feature tables built, Feast applied and materialized; do not write to
    its contract or feature tables (copy it, or use a fresh one, for tests that change data)."""
    settings = Settings(data_dir=Path(tmp_path_factory.mktemp("tiny-marketplace")) / "data")
    build_world(settings)
    return settings


@pytest.fixture
def mlflow_settings(tiny_marketplace: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The tiny marketplace with an MLflow store of the test's own (runs and registry start empty)."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tiny_marketplace.model_copy(
        update={
            "mlflow": tiny_marketplace.mlflow.model_copy(
                update={"tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}"}
            )
        }
    )


@dataclass(frozen=True)
class LocalServe:
    """The session's one Ray (2 CPUs) and Ray Serve, HTTP on a loopback port of its own."""

    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture(scope="session")
def local_serve() -> Iterator[LocalServe]:
    """One Serve instance per Ray cluster and one Ray per process: every test folder that serves
    (tests/serving, tests/reliability) deploys its applications into this one, under names and
    route prefixes of its own."""
    import ray
    from ray import serve

    from serving.deploy import free_port

    for attempt in (1, 2):  # Ray gives its raylet a fixed 30 s to register: an overloaded machine can miss it
        try:
            ray.init(num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
            break
        except Exception as error:
            ray.shutdown()
            if attempt == 2 or "timed out during startup" not in str(error):
                raise
    port = free_port()
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        yield LocalServe(port)
    finally:
        serve.shutdown()
        ray.shutdown()
