"""A Ray cluster of a head and a worker node, both on this host, started with `ray start`.

Loopback only, and apart from any other Ray on the machine:
- Ray turns 127.0.0.1 into the host's outward address (ray._private.services
  .resolve_ip_for_localhost), so the nodes take other loopback addresses, 127.0.0.2 and 127.0.0.3;
- the cluster has its own temp dir (where `ray start` records the cluster, so a plain `ray.init()`
  elsewhere never joins it) and its own auth token (RAY_AUTH_TOKEN, not the shared ~/.ray file);
- it is stopped by signalling the two `ray start --block` processes it started, not by
  `ray stop`, which ends every Ray process on the host.

The worker node carries a custom resource, `worker: 1`, so a test can place an actor or a task
there on purpose. Drivers talk to the cluster from processes of their own (a driver belongs to one
cluster for its whole life, and the test process may run a local Ray of its own: tests/serving's).
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

HEAD_IP = "127.0.0.2"
WORKER_IP = "127.0.0.3"
# the worker node's custom resource: asking for a share of it places work on that node
WORKER_RESOURCE = "worker"
START_SECONDS = 180
START_ATTEMPTS = 2
# what `ray start` prints once its node has registered with the cluster's GCS
STARTED_LINE = "Ray runtime started."
# a node drains for up to 30 s on SIGTERM before it stops its processes
STOP_GRACE_SECONDS = 45
RAY = str(Path(sys.executable).parent / "ray")
# what the test process may have set that must not leak into the cluster's nodes (and so into
# every task and replica they start): each driver says what it means
NOT_INHERITED = ("RAY_ADDRESS", "MLFLOW_TRACKING_URI", "TRADEWIND_MODE", "TRADEWIND_DATA_DIR")


@dataclass(frozen=True)
class RayCluster:
    address: str
    environment: dict[str, str]
    processes: tuple[subprocess.Popen, ...]
    logs: Path  # the `ray start` outputs
    temp_dir: Path  # Ray's own logs under session_latest/logs
    # per node, once stopped: whether it stopped by itself, leaving no process behind
    clean_stops: list[bool] = field(default_factory=list)

    def run_driver(
        self, arguments: list[str], timeout: float, extra_environment: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """A driver process on the cluster's environment (its auth token), from the project root."""
        return subprocess.run(
            arguments,
            env={**self.environment, **(extra_environment or {})},
            cwd=Path(__file__).resolve().parents[2],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def driver_report(
        self,
        script: Path,
        arguments: list[str],
        timeout: float,
        extra_environment: dict[str, str] | None = None,
    ) -> dict:
        """Run a driver script that prints a JSON report as its last line; that report."""
        done = self.run_driver([sys.executable, str(script), *arguments], timeout, extra_environment)
        assert done.returncode == 0, (
            f"{script.name} failed:\n{done.stderr[-3000:]}\n{log_tail(self.logs / 'ray-worker.1.log')}"
        )
        return json.loads(done.stdout.strip().splitlines()[-1])

    def ray_log_tail(self, pattern: str, lines: int = 15) -> str:
        """The end of the newest of Ray's logs matching `pattern` (e.g. `serve/controller_*.log`)."""
        found = sorted(
            self.temp_dir.glob(f"session_latest/logs/{pattern}"), key=lambda path: path.stat().st_mtime
        )
        return f"{found[-1].name}:\n{log_tail(found[-1], lines)}" if found else f"(no {pattern})"


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
    environment = {key: value for key, value in os.environ.items() if key not in NOT_INHERITED}
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
                    "--resources", json.dumps({WORKER_RESOURCE: 1}),
                ],
                environment,
                logs / "ray-worker",
            )
        )  # fmt: skip
        cluster = RayCluster(address, environment, tuple(started), logs, temp_dir)
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
