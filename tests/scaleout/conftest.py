"""Scale-out mode against real services on this machine, loopback only.

PostgreSQL and Redis come from `.ci/services.sh` (what `.ci/run` starts before the tests); the
MLflow tracking server and the two-node Ray cluster are started by the tests themselves. Each test
works in a database or Redis db of its own and removes it afterwards; the Ray cluster is one for the
session (`two_node_cluster`: starting it costs tens of seconds), and what a test deploys on it, it
removes.

Locally a test skips with one line when PostgreSQL or Redis is not reachable. Under CI (`CI=true`)
it fails instead: a broken install must not pass as a row of skips.
"""

from __future__ import annotations

import secrets
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from ray_cluster import RayCluster, ray_cluster
from scaleout_services import (
    CONNECT_TIMEOUT_SECONDS,
    RedisDb,
    ScratchDatabase,
    claimed_redis_db,
    first_line,
    libpq_conninfo,
    unavailable,
)
from sqlalchemy.engine import make_url

from configs.settings import ScaleoutSettings, load_settings

# The toy family, the tiny feature tables and the serving tests' tiny models of the embedded tests,
# imported the way pytest imports test modules (tests/ has no __init__.py: a test module's folder
# goes on sys.path).
for _folder in ("features", "training", "serving"):
    _path = str(Path(__file__).resolve().parents[1] / _folder)
    if _path not in sys.path:
        sys.path.insert(0, _path)


@pytest.fixture(scope="session")
def platform_scaleout() -> ScaleoutSettings:
    """The scale-out URLs of configs/platform.yaml: the ones `.ci/services.sh` must match."""
    return load_settings().scaleout


@pytest.fixture(scope="session")
def postgres_reachable(platform_scaleout: ScaleoutSettings) -> None:
    url = make_url(platform_scaleout.postgres_url)
    try:
        with psycopg.connect(
            libpq_conninfo(platform_scaleout.postgres_url), connect_timeout=CONNECT_TIMEOUT_SECONDS
        ):
            pass
    except psycopg.Error as error:
        unavailable(
            f"PostgreSQL at {url.host}:{url.port} as {url.username}/{url.database} not reachable "
            f"({first_line(error)})"
        )


@pytest.fixture
def scratch_database(postgres_reachable: None) -> Iterator[ScratchDatabase]:
    """`make(base_url, label)` creates an empty database beside `base_url`'s, owned by its role,
    and returns its URL; every one made is dropped at the end."""
    made: list[tuple[str, str]] = []

    def make(base_url: str, label: str) -> str:
        name = f"tradewind_test_{label}_{secrets.token_hex(4)}"
        with psycopg.connect(libpq_conninfo(base_url), autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        made.append((base_url, name))
        return make_url(base_url).set(database=name).render_as_string(hide_password=False)

    yield make
    for base_url, name in made:
        with psycopg.connect(libpq_conninfo(base_url), autocommit=True) as connection:
            # FORCE: a server or pool of the test may still hold a connection
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def redis_db(platform_scaleout: ScaleoutSettings) -> Iterator[RedisDb]:
    """A Redis db of the test's own on the configured server, emptied at the end."""
    with claimed_redis_db(platform_scaleout.redis_url) as claimed:
        yield claimed


@pytest.fixture(scope="session")
def two_node_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayCluster]:
    """The session's Ray cluster (tests/scaleout/ray_cluster.py); once stopped, each `ray start`
    must have stopped its node by itself on SIGTERM, leaving nothing in its process group: what
    `ray stop` would do, for this cluster alone."""
    with ray_cluster(tmp_path_factory.mktemp("ray-cluster")) as cluster:
        yield cluster
    assert cluster.clean_stops == [True, True], "a `ray start` left processes behind (worker, head)"
