"""A Ray driver for the cluster test, run as its own process (`python ray_probe.py ADDRESS NODES`):
waits until the cluster has NODES alive nodes, maps a task over items with the forecasting family's
Ray executor and prints, as JSON, the nodes and where each task ran.

A process of its own because a driver belongs to one cluster for its whole life, and the test
process may already run a local Ray of its own (the serving tests do).
"""

from __future__ import annotations

import json
import sys
import time

import ray

from training.forecaster.fit import ray_map, ray_runtime

NODE_WAIT_SECONDS = 120
TASKS = 6
# long enough that tasks overlap: with one CPU per node, overlapping tasks need both nodes
TASK_SECONDS = 1.0


def where_it_ran(item: int) -> dict[str, object]:
    time.sleep(TASK_SECONDS)
    return {"item": item, "node_id": ray.get_runtime_context().get_node_id()}


def main(address: str, nodes: int) -> int:
    with ray_runtime(address):
        deadline = time.monotonic() + NODE_WAIT_SECONDS
        while len(alive := [node for node in ray.nodes() if node["Alive"]]) < nodes:
            if time.monotonic() > deadline:
                print(
                    f"only {len(alive)} of {nodes} Ray nodes alive after {NODE_WAIT_SECONDS} s",
                    file=sys.stderr,
                )
                return 1
            time.sleep(0.5)
        tasks = ray_map(address)(where_it_ran, list(range(TASKS)))
    report = {
        "nodes": [
            {
                "node_id": node["NodeID"],
                "ip": node["NodeManagerAddress"],
                "cpus": node["Resources"].get("CPU"),
            }
            for node in alive
        ],
        "tasks": tasks,
    }
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], int(sys.argv[2])))
