"""The session's two-node Ray cluster (tests/scaleout/ray_cluster.py, started with `ray start`):
tasks of the platform's Ray executor run on both nodes. That the cluster stops leaving no process
behind is checked when the `two_node_cluster` fixture ends."""

from __future__ import annotations

from pathlib import Path

import pytest
from ray_cluster import HEAD_IP, WORKER_IP, RayCluster

pytestmark = pytest.mark.scaleout

PROBE_SECONDS = 240
PROBE = Path(__file__).with_name("ray_probe.py")


def test_tasks_run_on_both_nodes_of_a_two_node_cluster(two_node_cluster: RayCluster) -> None:
    report = two_node_cluster.driver_report(PROBE, [two_node_cluster.address, "2"], PROBE_SECONDS)

    nodes = {node["node_id"]: node for node in report["nodes"]}
    assert sorted(node["ip"] for node in nodes.values()) == [HEAD_IP, WORKER_IP]
    assert all(node["cpus"] == 1.0 for node in nodes.values())
    assert [task["item"] for task in report["tasks"]] == list(range(len(report["tasks"])))
    assert {task["node_id"] for task in report["tasks"]} == set(nodes)
