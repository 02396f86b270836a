"""What the scale-out tests share besides fixtures: the skip-or-fail rule and service handles."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import pytest
import redis
from sqlalchemy.engine import make_url

CONNECT_TIMEOUT_SECONDS = 3


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("true", "1")


def unavailable(what: str) -> NoReturn:
    """Skip locally, fail under CI, with one line naming the service and the cause."""
    message = f"{what}: start the services with `.ci/services.sh` (as root)"
    if in_ci():
        pytest.fail(f"{message}; under CI the scale-out tests must run, not skip", pytrace=False)
    pytest.skip(message)


def first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def libpq_conninfo(sqlalchemy_url: str) -> str:
    """`postgresql+psycopg://...` (SQLAlchemy, as Feast and MLflow take it) as psycopg takes it."""
    return make_url(sqlalchemy_url).set(drivername="postgresql").render_as_string(hide_password=False)


# `make(base_url, label)`: an empty database beside base_url's, its URL in the same form
ScratchDatabase = Callable[[str, str], str]


@dataclass(frozen=True)
class RedisDb:
    client: redis.Redis
    index: int
    # Feast's connection string for this db: `host:port,db=N`
    feast_connection: str


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def stop_process_group(process: subprocess.Popen, grace_seconds: float, *, leader_only: bool = False) -> bool:
    """Stop what a test started with `start_new_session=True`: SIGTERM to its process group (or to
    the leader alone, when it stops its own children in order), then SIGKILL to what is left.
    True when nothing was left to kill: the leader exited in time and its group is empty."""
    with contextlib.suppress(ProcessLookupError):
        if leader_only:
            process.send_signal(signal.SIGTERM)
        else:
            os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=grace_seconds)
    exited = process.poll() is not None
    try:
        os.killpg(process.pid, signal.SIGKILL)
        clean = False
    except ProcessLookupError:
        clean = exited
    process.wait(timeout=grace_seconds)
    return clean


def log_tail(path: Path, lines: int = 15) -> str:
    text = path.read_text(errors="replace") if path.exists() else "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def start_mlflow_server(
    backend_store_uri: str, artifacts: Path, port: int, log: Path, start_seconds: float
) -> subprocess.Popen:
    """`mlflow server` on 127.0.0.1:`port` over `backend_store_uri`, serving its own artifacts from
    `artifacts`, in a process group of its own (stop it with `stop_process_group`); returns once
    its /health answers, or fails the test with the log's tail."""
    import sys
    import time

    import httpx

    command = [
        str(Path(sys.executable).parent / "mlflow"),
        "server",
        "--backend-store-uri", backend_store_uri,
        "--artifacts-destination", str(artifacts),
        "--host", "127.0.0.1",
        "--port", str(port),
        "--workers", "1",
    ]  # fmt: skip
    with log.open("a") as output:
        process = subprocess.Popen(
            command, stdout=output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
    deadline = time.monotonic() + start_seconds
    while True:
        if process.poll() is not None:
            pytest.fail(f"mlflow server exited with {process.returncode}:\n{log_tail(log)}", pytrace=False)
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            stop_process_group(process, 10)
            pytest.fail(
                f"mlflow server not healthy after {start_seconds:.0f} s:\n{log_tail(log)}", pytrace=False
            )
        time.sleep(0.5)


# Redis dbs 1..15 are handed to tests (0 is the platform's); a claim key marks one as taken
REDIS_TEST_DBS = range(15, 0, -1)
REDIS_CLAIM_KEY = "tradewind:test:claimed"
# a claim left by a killed run lapses on its own
CLAIM_SECONDS = 3600


@contextlib.contextmanager
def claimed_redis_db(redis_url: str) -> Iterator[RedisDb]:
    """A Redis db of the caller's own on the server of `redis_url` (Feast form, host:port,...),
    emptied at the end. Skipped when no Redis answers there; under CI (`CI=true`) that fails."""
    address = redis_url.split(",")[0]
    host, _, port = address.rpartition(":")
    token = secrets.token_hex(8)
    claimed: RedisDb | None = None
    try:
        for index in REDIS_TEST_DBS:
            client = redis.Redis(host=host, port=int(port), db=index, socket_timeout=CONNECT_TIMEOUT_SECONDS)
            if client.set(REDIS_CLAIM_KEY, token, nx=True, ex=CLAIM_SECONDS):
                claimed = RedisDb(client, index, f"{address},db={index}")
                break
            client.close()
    except redis.RedisError as error:
        unavailable(f"Redis at {address} not reachable ({first_line(error)})")
    if claimed is None:
        pytest.fail(f"Redis at {address}: test dbs {min(REDIS_TEST_DBS)}..{max(REDIS_TEST_DBS)} all claimed")
    try:
        yield claimed
    finally:
        claimed.client.flushdb()
        claimed.client.close()
