"""The shared training flow against an MLflow tracking server whose backend store is PostgreSQL and
whose artifacts it serves itself (`mlflow-artifacts:/`): registered, champion, loadable by alias."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import mlflow
import pandas as pd
import psycopg
import pytest
from scaleout_services import (
    ScratchDatabase,
    free_port,
    libpq_conninfo,
    start_mlflow_server,
    stop_process_group,
)
from test_pipeline import LineConfig, LineFamily

from configs.settings import ScaleoutSettings, Settings
from tracking.registry import CHAMPION, load_by_alias, version_for_alias
from tracking.runs import tracking_client
from training.pipeline import train

pytestmark = pytest.mark.scaleout

# the first start creates MLflow's schema in PostgreSQL (a few dozen migrations): slow on 2 cores
SERVER_START_SECONDS = 180
STOP_GRACE_SECONDS = 15


class MlflowServer:
    def __init__(self, url: str, backend_store_uri: str, artifacts: Path) -> None:
        self.url = url
        self.backend_store_uri = backend_store_uri
        self.artifacts = artifacts


@pytest.fixture
def mlflow_server(
    tmp_path: Path, platform_scaleout: ScaleoutSettings, scratch_database: ScratchDatabase
) -> Iterator[MlflowServer]:
    """`mlflow server` on a loopback port of its own, over a scratch database beside the configured
    backend store's; stopped at the end, and MLflow's client pointed back where it was."""
    backend = scratch_database(platform_scaleout.mlflow_backend_store_uri, "mlflow")
    artifacts = tmp_path / "artifacts"
    port = free_port()
    previous = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    process = start_mlflow_server(
        backend, artifacts, port, tmp_path / "mlflow-server.log", SERVER_START_SECONDS
    )
    url = f"http://127.0.0.1:{port}"
    try:
        yield MlflowServer(url, backend, artifacts)
    finally:
        stop_process_group(process, STOP_GRACE_SECONDS)
        mlflow.set_tracking_uri(previous[0])
        mlflow.set_registry_uri(previous[1])


def test_training_registers_a_champion_on_the_tracking_server(
    tmp_path: Path,
    platform_scaleout: ScaleoutSettings,
    mlflow_server: MlflowServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    settings = Settings(
        mode="scaleout",
        data_dir=tmp_path / "data",
        scaleout=platform_scaleout.model_copy(update={"mlflow_tracking_uri": mlflow_server.url}),
    )
    assert settings.mlflow_tracking_uri == mlflow_server.url  # the mode switch, not an override
    family = LineFamily()

    result = train(settings, family, LineConfig())

    assert result.aliases == (CHAMPION,)
    champion = version_for_alias(family.registered_model, CHAMPION)
    assert champion is not None and champion.version == result.version.version
    served = load_by_alias(family.registered_model).predict(pd.DataFrame({"x": [2.0]}))
    # the default halves the least-squares slope (about 3): about 1.5 * 2
    assert served["y"].iloc[0] == pytest.approx(3.0, rel=0.1)

    # runs and registry live in PostgreSQL; artifacts went through the server to its destination
    with psycopg.connect(libpq_conninfo(mlflow_server.backend_store_uri)) as connection:
        runs = connection.execute("SELECT run_uuid, status FROM runs").fetchall()
        models = connection.execute("SELECT name FROM registered_models").fetchall()
        aliases = connection.execute("SELECT alias, version FROM registered_model_aliases").fetchall()
    assert runs == [(result.run_id, "FINISHED")]
    assert models == [(family.registered_model,)]
    assert aliases == [(CHAMPION, int(result.version.version))]
    run = tracking_client().get_run(result.run_id)
    assert run.info.artifact_uri.startswith("mlflow-artifacts:")
    assert [path.name for path in mlflow_server.artifacts.rglob("fit.png")] == ["fit.png"]
    assert list(mlflow_server.artifacts.rglob("MLmodel"))
    assert not (settings.root / "mlflow").exists()
