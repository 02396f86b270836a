"""Serving under failure, against real processes on 127.0.0.1 (no monkeypatch):

- a Recommender replica killed under load: fewer than 1% of the requests fail and Serve's
  controller brings the deployment back to its two replicas;
- the MLflow server stopped (terminated): the loaded models keep answering, GET /models says the
  registry is unreachable and what is served (the last known good versions), and the server
  started again on the same port and store is noticed.

One application serves both: the tiny models (tests/serving's `tiny_world`) registered on a real
`mlflow server` over SQLite in the module's folder, deployed with two Recommender replicas.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import mlflow
import pytest
import served_models
from polling import wait_until
from scaleout_services import free_port, start_mlflow_server, stop_process_group
from tiny_world import FAST_LIFECYCLE, ServingWorld, registered_world

from configs.settings import Settings

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

APP = "reliability"
POLL_S = 1.0
REGISTRY_TIMEOUT_S = 5.0  # serving's registry_timeout_s default
SERVER_START_S = 180  # `mlflow server` imports MLflow twice (CLI, then uvicorn): slow on 2 busy cores
STOP_GRACE_S = 10
MODEL_ENDPOINTS = ("recommend", "forecast", "bid")

# the replica kill: bounded load from async clients
REQUESTS = 1000
CONCURRENCY = 16
LOAD_LIMIT_S = 60.0
KILL_AFTER = REQUESTS // 3  # requests sent before the kill
BACK_TO_TWO_S = 120.0


class RegistryServer:
    """`mlflow server` on one port and one SQLite store, stopped and started again by a test."""

    def __init__(self, folder: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.store = f"sqlite:///{folder / 'registry.db'}"
        self.artifacts = folder / "artifacts"
        self.log = folder / "mlflow-server.log"
        self.process: Any = None

    def start(self) -> None:
        self.process = start_mlflow_server(self.store, self.artifacts, self.port, self.log, SERVER_START_S)

    def stop(self) -> None:
        if self.process is not None:
            stop_process_group(self.process, STOP_GRACE_S)
            self.process = None


@dataclass
class Served:
    world: ServingWorld
    server: RegistryServer
    url: str
    client: httpx.Client  # sends the key start_serving made

    def models(self) -> dict[str, Any]:
        response = self.client.get("/models")
        assert response.status_code == 200, response.text
        return response.json()


@pytest.fixture(scope="module")
def served(
    tiny_marketplace: Settings, tmp_path_factory: pytest.TempPathFactory, local_serve: Any
) -> Iterator[Served]:
    from ray import serve

    from serving.deploy import start_serving
    from serving.settings import SPLIT_SERVING_CONFIG

    os.environ.pop("MLFLOW_TRACKING_URI", None)
    server = RegistryServer(tmp_path_factory.mktemp("reliability-registry"))
    previous = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    # mlflow.set_tracking_uri also sets MLFLOW_TRACKING_URI, which later subprocesses (the demo's)
    # would inherit: the variables are put back as they were too
    variables = {name: os.environ.get(name) for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    server.start()
    try:
        # a recommender that takes 30 ms an answer: the killed replica has requests in flight
        world = registered_world(tiny_marketplace, server.url, served_models.SlowRecommender)
        serving = start_serving(
            world.settings,
            config=SPLIT_SERVING_CONFIG,  # a Recommender deployment of its own, two replicas to kill one of
            port=local_serve.port,
            app_name=APP,
            route_prefix=f"/{APP}",
            with_echo=False,
            # no admission limit, no default deadline: the kill sends a dead replica's share to the
            # live one at once, and what is measured is requests lost, not refused
            user_config={"poll_interval_s": POLL_S, "max_in_flight": 1000, "deadline_ms": 0},
            options={
                "Ingress": {"autoscaling_config": None, "num_replicas": 1, **FAST_LIFECYCLE},
                "Recommender": {"autoscaling_config": None, "num_replicas": 2, **FAST_LIFECYCLE},
                "Forecaster": {"autoscaling_config": None, "num_replicas": 1, **FAST_LIFECYCLE},
                "Bidder": {"autoscaling_config": None, "num_replicas": 1, **FAST_LIFECYCLE},
            },
        )
        with httpx.Client(base_url=serving.url, headers=serving.headers, timeout=20.0) as client:
            yield Served(world, server, serving.url, client)
    finally:
        serve.delete(APP)  # tests/serving, in the same session, finds Serve as it was
        server.stop()
        mlflow.set_tracking_uri(previous[0])
        mlflow.set_registry_uri(previous[1])
        for name, value in variables.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


# ---------------------------------------------------------------------------------------------
# a replica killed under load


def replica_actor_names(deployment: str) -> list[str]:
    import ray

    prefix = f"SERVE_REPLICA::{APP}#{deployment}#"
    return sorted(
        actor["name"]
        for actor in ray.util.list_named_actors(all_namespaces=True)
        if actor["namespace"] == "serve" and actor["name"].startswith(prefix)
    )


def running_replicas(deployment: str) -> int:
    from ray import serve

    states = serve.status().applications[APP].deployments[deployment].replica_states
    return int(states.get("RUNNING", 0))


async def load_with_a_kill(
    url: str, headers: dict[str, str], world: ServingWorld
) -> tuple[list[tuple[int, str | None]], str]:
    """REQUESTS /recommend from CONCURRENCY clients (at most LOAD_LIMIT_S); once KILL_AFTER are
    sent, one of the two replica actors is killed as a crash would. Returns (status, replica) per
    request (status 0: no HTTP answer) and the killed actor's name."""
    import ray

    results: list[tuple[int, str | None]] = []
    sent = 0
    deadline = time.monotonic() + LOAD_LIMIT_S
    killed: list[str] = []
    kill_now = asyncio.Event()

    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=20.0) as client:

        async def worker() -> None:
            nonlocal sent
            while sent < REQUESTS and time.monotonic() < deadline:
                sent += 1
                if sent == KILL_AFTER:
                    kill_now.set()
                user = world.users[sent % len(world.users)]
                try:
                    response = await client.post(
                        "/recommend", json={"user_id": user, "market": world.markets[0], "k": 5}
                    )
                except httpx.HTTPError:
                    results.append((0, None))
                    continue
                ok = response.status_code == 200
                results.append((response.status_code, response.json()["model"]["replica"] if ok else None))

        async def killer() -> None:
            await asyncio.wait_for(kill_now.wait(), timeout=LOAD_LIMIT_S)
            names = replica_actor_names("Recommender")
            assert len(names) == 2, names
            # no_restart=False: Ray does not restart a Serve replica itself (max_restarts=0);
            # Serve's controller notices the death and starts a replacement
            await asyncio.to_thread(ray.kill, ray.get_actor(names[0], namespace="serve"), no_restart=False)
            killed.append(names[0])

        await asyncio.gather(killer(), *(worker() for _ in range(CONCURRENCY)))
    return results, killed[0]


def test_a_replica_killed_under_load_fails_under_one_percent_and_comes_back(served: Served) -> None:
    world, url = served.world, served.url
    assert running_replicas("Recommender") == 2
    before = replica_actor_names("Recommender")

    started = time.monotonic()
    results, victim = asyncio.run(load_with_a_kill(url, dict(served.client.headers), world))
    load_s = time.monotonic() - started

    statuses = Counter(status for status, _ in results)
    failed = len(results) - statuses[200]
    print(f"\n{len(results)} requests in {load_s:.1f} s, statuses {dict(statuses)}, killed {victim}")
    assert len(results) >= REQUESTS * 0.9, f"only {len(results)} of {REQUESTS} requests in {LOAD_LIMIT_S} s"
    assert failed < 0.01 * len(results), f"{failed} of {len(results)} failed: {dict(statuses)}"
    answered_by = Counter(replica for status, replica in results if status == 200)
    assert answered_by[victim.rsplit("#", 1)[-1]] > 0, "the killed replica never answered: no load on it"

    started = time.monotonic()
    wait_until(
        lambda: running_replicas("Recommender") == 2 and victim not in replica_actor_names("Recommender"),
        BACK_TO_TWO_S,
        "the Recommender to be back to 2 RUNNING replicas",
        every_s=0.5,
    )
    print(f"back to 2 RUNNING replicas {time.monotonic() - started:.1f} s after the load ended")
    after = replica_actor_names("Recommender")
    assert len(after) == 2 and victim not in after
    replacement = (set(after) - set(before)).pop().rsplit("#", 1)[-1]

    def replacement_answers() -> bool:
        body = {"user_id": world.users[0], "market": world.markets[0], "k": 3}
        replicas = {served.client.post("/recommend", json=body).json()["model"]["replica"] for _ in range(20)}
        return replacement in replicas

    wait_until(replacement_answers, 30.0, "the replacement replica to answer requests")


# ---------------------------------------------------------------------------------------------
# the registry server stopped and started again


def test_serving_goes_on_while_the_registry_server_is_down(served: Served) -> None:
    client, server = served.client, served.server
    examples = {}
    for endpoint, status in served.models().items():
        assert status["registry_reachable"] is True, status
        examples[endpoint] = status["variants"]["champion"]["example_request"]
    assert set(examples) == set(MODEL_ENDPOINTS)
    # the bid example reserves budget on today's market-local day in the data folder's pacing state;
    # tests/serving bids on days of their own (`budget_day`), so no other test counts on that state

    def answered() -> dict[str, int]:
        """Each endpoint's status for its champion's own example request."""
        return {
            endpoint: client.post(f"/{endpoint}", json=body).status_code
            for endpoint, body in examples.items()
        }

    everything_ok = {endpoint: 200 for endpoint in examples}
    assert answered() == everything_ok
    versions = {
        endpoint: status["variants"]["champion"]["version"] for endpoint, status in served.models().items()
    }

    def all_endpoints(reachable: bool) -> dict[str, Any] | None:
        found = served.models()
        return found if all(found[e]["registry_reachable"] is reachable for e in MODEL_ENDPOINTS) else None

    server.stop()
    stopped, stopped_at = time.monotonic(), datetime.now(UTC)
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{server.url}/health", timeout=2)
    wait_until(lambda: all_endpoints(False), 5 * POLL_S + 20, "every endpoint to report the registry down")
    print(f"\nregistry reported unreachable {time.monotonic() - stopped:.1f} s after the stop")
    # /models asks one replica per call; a replica whose poll was in flight when the server went away
    # learns of it once that call times out (serving's registry_timeout_s)
    wait_until(
        lambda: all(all_endpoints(False) for _ in range(6)),
        REGISTRY_TIMEOUT_S + 5 * POLL_S + 20,
        "every replica of every endpoint to report the registry down",
    )

    # several polls with the server down: every request is still answered by the loaded models, and
    # every status (two Recommender replicas: /models asks one of them each time) says so
    rounds: list[dict[str, int]] = []
    until = time.monotonic() + 5 * POLL_S
    while time.monotonic() < until:
        rounds.append(answered())
        status = served.models()
        for endpoint in MODEL_ENDPOINTS:
            facts = status[endpoint]
            assert facts["registry_reachable"] is False, facts
            assert facts["last_error"].startswith("registry unreachable, serving the last loaded models"), (
                facts
            )
            assert facts["variants"]["champion"]["version"] == versions[endpoint]  # the last known good
            # the last poll that reached the registry was before the stop
            assert datetime.fromisoformat(facts["last_checked"]) < stopped_at + timedelta(seconds=1), facts
    assert len(rounds) >= 3 and all(row == everything_ok for row in rounds), rounds

    server.start()  # same port, same store
    restarted_at = datetime.now(UTC)
    wait_until(
        lambda: all(all_endpoints(True) for _ in range(6)),
        5 * POLL_S + 20,
        "every replica of every endpoint to see the registry back",
    )
    print(
        f"registry reported reachable again {(datetime.now(UTC) - restarted_at).total_seconds():.1f} s later"
    )
    for _ in range(6):  # each Recommender replica has noticed
        status = served.models()
        for endpoint in MODEL_ENDPOINTS:
            facts = status[endpoint]
            assert facts["registry_reachable"] is True and facts["last_error"] is None, facts
            assert datetime.fromisoformat(facts["last_checked"]) > restarted_at - timedelta(seconds=1), facts
            assert facts["variants"]["champion"]["version"] == versions[endpoint]
    assert answered() == everything_ok
