"""A Ray Serve driver for the cluster test, run as its own process
(`python ray_serve_probe.py ADDRESS status|shutdown`): prints, as JSON, what Serve reports of its
applications once none is still deploying, and where each of its actors runs (`status`), or shuts
Serve down on the cluster and reports the Serve actors still alive afterwards (`shutdown`).

Actor placement comes from the GCS actor table (`ray._private.state.actors`): the public state API
(`ray.util.state.list_actors`, `serve status`) goes through the dashboard, which the test cluster
does not run.
"""

from __future__ import annotations

import json
import sys
import time

import ray
from ray import serve

SHUTDOWN_WAIT_SECONDS = 60
# replicas start one by one after the ingress answers: status waits for the deploy to settle
DEPLOYING_WAIT_SECONDS = 120
# Serve's system actors and replicas, by actor name (namespace "serve")
SERVE_ACTOR_PREFIXES = ("SERVE_CONTROLLER_ACTOR", "SERVE_PROXY_ACTOR", "SERVE_REPLICA::")


def serve_actors() -> list[dict[str, str]]:
    from ray._private.state import actors

    return [
        {"name": info["Name"], "class": info["ActorClassName"], "ip": info["Address"]["IPAddress"]}
        for info in actors().values()
        if info["State"] == "ALIVE" and info["Name"].startswith(SERVE_ACTOR_PREFIXES)
    ]


def status() -> dict[str, object]:
    deadline = time.monotonic() + DEPLOYING_WAIT_SECONDS
    overview = serve.status()
    while time.monotonic() < deadline and any(
        application.status in ("NOT_STARTED", "DEPLOYING") for application in overview.applications.values()
    ):
        time.sleep(0.5)
        overview = serve.status()
    applications = {
        name: {
            "status": getattr(application.status, "value", str(application.status)),
            "deployments": {
                deployment: {
                    "status": getattr(state.status, "value", str(state.status)),
                    "replicas": {
                        getattr(replica, "value", str(replica)): count
                        for replica, count in state.replica_states.items()
                    },
                }
                for deployment, state in application.deployments.items()
            },
        }
        for name, application in overview.applications.items()
    }
    return {"applications": applications, "actors": serve_actors()}


def shutdown() -> dict[str, object]:
    serve.shutdown()
    deadline = time.monotonic() + SHUTDOWN_WAIT_SECONDS
    while (left := serve_actors()) and time.monotonic() < deadline:
        time.sleep(0.5)
    return {"alive_after_shutdown": left}


def main(address: str, command: str) -> int:
    ray.init(address=address, namespace="serve", log_to_driver=False)
    try:
        report = {"status": status, "shutdown": shutdown}[command]()
    finally:
        ray.shutdown()
    print(json.dumps(report, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
