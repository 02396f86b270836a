"""The Serve application of configs/serving.yaml on the session's two-node Ray cluster, deployed
the scale-out way: `serve run --non-blocking --address <head>` with the config file (what `serve
deploy` does through the dashboard, which the test cluster does not run). HTTP is the head's proxy
on 127.0.0.2; the Forecaster's replica asks for the worker node's custom resource, so a forecast
request crosses from the head's proxy and ingress to a replica on 127.0.0.3.

The models are tests/serving's tiny ones (tiny_world), registered in an MLflow store of this
module's own that both nodes read (one host); the application reaches the tiny marketplace and that
store through its `args.platform_config`, a platform config written for it, as a deployment to a
real cluster would point at its shared storage.
"""

from __future__ import annotations

import copy
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml
from ray_cluster import HEAD_IP, WORKER_IP, WORKER_RESOURCE, RayCluster
from scaleout_services import free_port
from tiny_world import ServingWorld, registered_world

from configs import read_config_file
from configs.settings import Settings
from serving.auth import add_key
from serving.deploy import TRADEWIND_IMPORT
from serving.settings import SPLIT_SERVING_CONFIG, load_serving_config

pytestmark = pytest.mark.scaleout

PROBE = Path(__file__).with_name("ray_serve_probe.py")
DEPLOY_SECONDS = 180
READY_SECONDS = 240
PROBE_SECONDS = 120


@dataclass(frozen=True)
class ClusterServing:
    cluster: RayCluster
    world: ServingWorld
    url: str
    application: str
    headers: dict[str, str]  # the key the test added to the application's keys file


def serving_config_for(cluster_platform: Path, port: int, keys_file: Path) -> dict:
    """configs/serving-split.yaml's tradewind application for the cluster (each model a deployment
    of its own, so one can be placed on the worker): HTTP on the head's address,
    one replica per deployment, the Forecaster's on the worker node, API keys from `keys_file`."""
    _, config = read_config_file(SPLIT_SERVING_CONFIG)
    config = copy.deepcopy(config)
    config["http_options"] = {**config.get("http_options", {}), "host": HEAD_IP, "port": port}
    (application,) = [app for app in config["applications"] if app["import_path"] == TRADEWIND_IMPORT]
    args = application.get("args") or {}
    auth = {**(args.get("auth") or {}), "keys_file": str(keys_file)}
    application["args"] = {**args, "platform_config": str(cluster_platform), "auth": auth}
    for deployment in application["deployments"]:
        deployment.pop("autoscaling_config", None)
        deployment["num_replicas"] = 1
        if deployment["name"] == "Forecaster":
            options = deployment.setdefault("ray_actor_options", {})
            options["resources"] = {**options.get("resources", {}), WORKER_RESOURCE: 0.5}
    config["applications"] = [application]
    return config


def wait_for_forecast(
    url: str, world: ServingWorld, cluster: RayCluster, headers: dict[str, str]
) -> httpx.Response:
    """The first forecast the deployed application answers (replicas start and load their models
    after the deploy returns)."""
    body = {"product_ids": world.products[:2], "market": world.markets[0], "horizon": 3}
    deadline = time.monotonic() + READY_SECONDS
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            response = httpx.post(f"{url}/forecast", json=body, headers=headers, timeout=10.0)
            if response.status_code == 200:
                return response
            last = f"{response.status_code} {response.text[:300]}"
        except httpx.HTTPError as error:
            last = repr(error)
        time.sleep(1.0)
    pytest.fail(
        f"no forecast from {url} within {READY_SECONDS} s (last: {last})\n"
        f"{cluster.ray_log_tail('serve/controller_*.log')}"
    )


@pytest.fixture(scope="module")
def cluster_serving(
    two_node_cluster: RayCluster, tiny_marketplace: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ClusterServing]:
    folder = tmp_path_factory.mktemp("cluster-serving")
    store = f"sqlite:///{folder / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        world = registered_world(tiny_marketplace, store)
    platform = folder / "platform.yaml"
    platform.write_text(
        yaml.safe_dump(
            {"mode": "embedded", "data_dir": str(world.settings.root), "mlflow": {"tracking_uri": store}}
        )
    )
    port = free_port(HEAD_IP)
    keys_file = folder / "api_keys.yaml"  # the nodes share this host's files
    key = add_key(keys_file, "cluster-test", ["forecast"])
    config = serving_config_for(platform, port, keys_file)
    serve_config = folder / "serving.yaml"
    serve_config.write_text(yaml.safe_dump(config, sort_keys=False))
    load_serving_config(serve_config)  # what `tradewind serve` checks before deploying

    serve = str(Path(sys.executable).parent / "serve")
    try:
        deployed = two_node_cluster.run_driver(
            [serve, "run", "--non-blocking", "--address", two_node_cluster.address, str(serve_config)],
            DEPLOY_SECONDS,
        )
        assert deployed.returncode == 0, (
            f"`serve run` failed:\n{deployed.stdout[-2000:]}{deployed.stderr[-2000:]}"
        )
        url = f"http://{HEAD_IP}:{port}"
        headers = {"Authorization": f"Bearer {key}"}
        yield ClusterServing(two_node_cluster, world, url, config["applications"][0]["name"], headers)
    finally:
        down = two_node_cluster.driver_report(PROBE, [two_node_cluster.address, "shutdown"], PROBE_SECONDS)
        world.client.close()
        assert down["alive_after_shutdown"] == [], f"Serve actors left after serve.shutdown: {down}"


def test_serve_application_answers_over_http_on_the_head_node(cluster_serving: ClusterServing) -> None:
    world = cluster_serving.world
    forecast = wait_for_forecast(
        cluster_serving.url, world, cluster_serving.cluster, cluster_serving.headers
    ).json()
    assert forecast["market"] == world.markets[0]
    assert sorted({row["product_id"] for row in forecast["forecasts"]}) == world.products[:2]
    assert len(forecast["forecasts"]) == 2 * 3
    health = httpx.get(f"{cluster_serving.url}/healthz", timeout=10.0)
    assert (health.status_code, health.json()) == (200, {"status": "ok"})
    # the keys file the nodes read: no key is 401, a key without the scope 403
    body = {"product_ids": world.products[:1], "market": world.markets[0], "horizon": 1}
    assert httpx.post(f"{cluster_serving.url}/forecast", json=body, timeout=10.0).status_code == 401
    outside = httpx.post(f"{cluster_serving.url}/bid", json={}, headers=cluster_serving.headers, timeout=10.0)
    assert outside.status_code == 403, outside.text


def test_serve_replicas_run_on_both_nodes(cluster_serving: ClusterServing) -> None:
    wait_for_forecast(
        cluster_serving.url, cluster_serving.world, cluster_serving.cluster, cluster_serving.headers
    )
    report = cluster_serving.cluster.driver_report(
        PROBE, [cluster_serving.cluster.address, "status"], PROBE_SECONDS
    )

    application = report["applications"][cluster_serving.application]
    assert application["status"] == "RUNNING"
    assert {name: state["replicas"] for name, state in application["deployments"].items()} == {
        name: {"RUNNING": 1} for name in ("Ingress", "Recommender", "Forecaster", "Bidder")
    }
    where = {actor["class"]: actor["ip"] for actor in report["actors"]}
    replicas = {name.rsplit(":", 1)[-1]: ip for name, ip in where.items() if name.startswith("ServeReplica")}
    assert set(replicas) == {"Ingress", "Recommender", "Forecaster", "Bidder"}
    assert replicas["Forecaster"] == WORKER_IP  # the worker's custom resource
    proxies = [actor["ip"] for actor in report["actors"] if actor["name"].startswith("SERVE_PROXY_ACTOR")]
    assert proxies == [HEAD_IP]  # proxy_location: HeadOnly
