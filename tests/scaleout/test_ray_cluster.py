"""A Ray cluster of a head and a worker node, both on this host, started with `ray start`: tasks of
the platform's Ray executor run on both nodes, and the cluster stops leaving no process behind.

Loopback only, and apart from any other Ray on the machine:
- Ray turns 127.0.0.1 into the host's outward address (ray._private.services
  .resolve_ip_for_localhost), so the nodes take other loopback addresses, 127.0.0.2 and 127.0.0.3;
- the cluster has its own temp dir (where `ray start` records the cluster, so a plain `ray.init()`
  elsewhere never joins it) and its own auth token (RAY_AUTH_TOKEN, not the shared ~/.ray file);
- it is stopped by signalling the two `ray start --block` processes it started, not by
  `ray stop`, which ends every Ray process on the host.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from scaleout_services import free_port, log_tail, stop_process_group

pytestmark = pytest.mark.scaleout

HEAD_IP = "127.0.0.2"
WORKER_IP = "127.0.0.3"
START_SECONDS = 180
START_ATTEMPTS = 2
# what `ray start` prints once its node has registered with the cluster's GCS
STARTED_LINE = "Ray runtime started."
PROBE_SECONDS = 240
# a node drains for up to 30 s on SIGTERM before it stops its processes
STOP_GRACE_SECONDS = 45
RAY = str(Path(sys.executable).parent / "ray")
PROBE = Path(__file__).with_name("ray_probe.py")


@dataclass(frozen=True)
class RayCluster:
    address: str
    environment: dict[str, str]
    processes: tuple[subprocess.Popen, ...]
    # per node, once stopped: whether it stopped by itself, leaving no process behind
    clean_stops: list[bool] = field(default_factory=list)


def start_node(arguments: list[str], environment: dict[str, str], log: Path) -> subprocess.Popen:
    """`ray start --block ...` in a process group of its own, returned once its node has registered
    with the cluster; a node that does not register within Ray's fixed 30 s (ray/_private/node.py,
    not configurable), which an overloaded machine can miss, is started once more."""
    for attempt in range(1, START_ATTEMPTS + 1):
        attempt_log = log.with_suffix(f".{attempt}.log")
        with attempt_log.open("w") as output:
            process = subprocess.Popen(
                [RAY, "start", "--block", "--num-cpus", "1", "--disable-usage-stats", *arguments],
                env=environment,
                stdout=output,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # stopped as a whole, by its own id
            )
        deadline = time.monotonic() + START_SECONDS
        while process.poll() is None and STARTED_LINE not in attempt_log.read_text(errors="replace"):
            if time.monotonic() > deadline:
                stop_process_group(process, STOP_GRACE_SECONDS, leader_only=True)
                pytest.fail(f"`ray start` not up after {START_SECONDS} s:\n{log_tail(attempt_log)}")
            time.sleep(0.5)
        if process.poll() is None:
            return process
        stop_process_group(process, STOP_GRACE_SECONDS, leader_only=True)  # what it left behind
    pytest.fail(
        f"`ray start` failed {START_ATTEMPTS} times; the last:\n{log_tail(attempt_log)}", pytrace=False
    )


@contextlib.contextmanager
def ray_cluster(logs: Path) -> Iterator[RayCluster]:
    # short: Ray's socket paths under it must fit in a unix socket name (107 bytes)
    temp_dir = Path(tempfile.mkdtemp(prefix="twray-", dir="/tmp"))
    environment = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    environment.update(
        RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32), RAY_USAGE_STATS_ENABLED="0"
    )
    port = free_port(HEAD_IP)
    address = f"{HEAD_IP}:{port}"
    started: list[subprocess.Popen] = []
    cluster: RayCluster | None = None
    try:
        started.append(
            start_node(
                [
                    "--head",
                    "--node-ip-address", HEAD_IP,
                    "--port", str(port),
                    "--include-dashboard=false",
                    "--ray-client-server-port", str(free_port(HEAD_IP)),
                    "--dashboard-agent-listen-port", str(free_port(HEAD_IP)),
                    "--temp-dir", str(temp_dir),
                ],
                environment,
                logs / "ray-head",
            )
        )  # fmt: skip
        started.append(
            start_node(
                [
                    "--address", address,
                    "--node-ip-address", WORKER_IP,
                    "--dashboard-agent-listen-port", str(free_port(WORKER_IP)),
                ],
                environment,
                logs / "ray-worker",
            )
        )  # fmt: skip
        cluster = RayCluster(address, environment, tuple(started))
        yield cluster
    finally:
        # the worker first, then the head; `ray start` drains its node and stops its processes
        # (signalling the whole group would stop the head's GCS before the drain that needs it)
        stops = [
            stop_process_group(process, STOP_GRACE_SECONDS, leader_only=True) for process in started[::-1]
        ]
        if cluster is not None:
            cluster.clean_stops.extend(stops)
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_tasks_run_on_both_nodes_of_a_two_node_cluster(tmp_path: Path) -> None:
    with ray_cluster(tmp_path) as cluster:
        probe = subprocess.run(
            [sys.executable, str(PROBE), cluster.address, "2"],
            env=cluster.environment,
            capture_output=True,
            text=True,
            timeout=PROBE_SECONDS,
            check=False,
        )
        assert probe.returncode == 0, (
            f"probe failed:\n{probe.stderr[-3000:]}\n{log_tail(tmp_path / 'ray-worker.1.log')}"
        )
        report = json.loads(probe.stdout.strip().splitlines()[-1])

        nodes = {node["node_id"]: node for node in report["nodes"]}
        assert sorted(node["ip"] for node in nodes.values()) == [HEAD_IP, WORKER_IP]
        assert all(node["cpus"] == 1.0 for node in nodes.values())
        assert [task["item"] for task in report["tasks"]] == list(range(len(report["tasks"])))
        assert {task["node_id"] for task in report["tasks"]} == set(nodes)

    # what `ray stop` would do, for this cluster alone: each `ray start` stopped its node on SIGTERM
    # and exited, leaving nothing in its process group
    assert cluster.clean_stops == [True, True]
