"""Start the serving applications of configs/serving.yaml on a local (or connected) Ray.

`serve run configs/serving.yaml` is the plain Ray way and what `tradewind serve` runs. The tests,
the demo and the benchmark need the same applications inside their own process, for a data
folder of their choosing, on a free loopback port: `start_serving` reads the same config file
(deployment options, user_config) and deploys it with `serve.run`, optionally with a few
user_config keys overridden.
"""

from __future__ import annotations

import copy
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from typing import Any

from configs.settings import Settings
from serving.settings import MODEL_DEPLOYMENTS, SERVING_CONFIG, application, load_serving_config

TRADEWIND_IMPORT = "serving.app:build_app"
ECHO_IMPORT = "serving.app:build_echo"
# how long `tradewind serve` lets `serve run` shut Serve and Ray down after a stop signal
STOP_GRACE_S = 60.0


@dataclass(frozen=True)
class Serving:
    url: str  # http://127.0.0.1:<port>
    config: dict[str, Any]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def deployment_options(
    entry: dict[str, Any], user_config: dict[str, Any] | None = None
) -> dict[str, dict[str, Any]]:
    """`.options()` per deployment name from an application entry; `user_config` keys are merged
    into every model deployment's user_config (tests poll faster, for example)."""
    options: dict[str, dict[str, Any]] = {}
    for deployment in entry.get("deployments") or []:
        values = copy.deepcopy({key: value for key, value in deployment.items() if key != "name"})
        if user_config and deployment["name"] in MODEL_DEPLOYMENTS.values():
            values["user_config"] = {**(values.get("user_config") or {}), **user_config}
        options[deployment["name"]] = values
    return options


def start_serving(
    settings: Settings,
    *,
    config: str = SERVING_CONFIG,
    port: int | None = None,
    user_config: dict[str, Any] | None = None,
    registered_models: dict[str, str] | None = None,
    options: dict[str, dict[str, Any]] | None = None,
    num_cpus: int | None = None,
    with_echo: bool = True,
    metrics_port: int | None = None,
    app_name: str | None = None,
    route_prefix: str | None = None,
) -> Serving:
    """Deploy the tradewind application (and the bare echo) on 127.0.0.1 and wait until ready.

    `options` replace deployment options of the config per deployment name (e.g. a fixed number
    of replicas instead of autoscaling). `metrics_port` is where Ray exports Prometheus metrics
    (Ray Serve's own and Tradewind's) when this call starts Ray. `app_name` and `route_prefix`
    deploy the tradewind application beside others in a Serve instance already running (on
    `port`): the returned url then ends with the prefix."""
    import ray
    from ray import serve

    from serving.app import Echo, tradewind_app

    serve_config = load_serving_config(config)
    if not ray.is_initialized():
        extra = {"_metrics_export_port": metrics_port} if metrics_port else {}
        ray.init(
            num_cpus=num_cpus, include_dashboard=False, configure_logging=False, log_to_driver=False, **extra
        )
    port = port or free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    tradewind = application(serve_config, TRADEWIND_IMPORT)
    chosen = deployment_options(tradewind, user_config)
    for name, replaced in (options or {}).items():
        chosen[name] = {**chosen.get(name, {}), **replaced}
    prefix = route_prefix or tradewind.get("route_prefix", "/")
    serve.run(
        tradewind_app(settings, chosen, registered_models),
        name=app_name or tradewind["name"],
        route_prefix=prefix,
    )
    if with_echo:
        echo = application(serve_config, ECHO_IMPORT)
        echo_options = deployment_options(echo).get("Echo", {})
        serve.run(Echo.options(**echo_options).bind(), name=echo["name"], route_prefix=echo["route_prefix"])
    url = f"http://127.0.0.1:{port}{prefix.rstrip('/')}"
    _wait_for_http(url)
    return Serving(url, serve_config)


def _wait_for_http(url: str, timeout_s: float = 60.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"serving did not answer {url}/healthz within {timeout_s:.0f} s")
        time.sleep(0.2)


def serve_run(settings: Settings, config: str = SERVING_CONFIG) -> int:
    """`serve run <config>` (Ray's own CLI) for these settings, in the foreground; its exit code.

    The config is validated first, so a wrong key fails with one line naming file and key. The
    data folder reaches the application builder through TRADEWIND_DATA_DIR; in scale-out mode
    Ray's address comes from the platform settings."""
    import os
    import sys
    from pathlib import Path

    from configs import PROJECT_ROOT, config_path

    load_serving_config(config)
    command = [str(Path(sys.executable).parent / "serve"), "run", str(config_path(config))]
    if settings.ray_address:
        command[2:2] = ["--address", settings.ray_address]
    environment = {**os.environ, "TRADEWIND_DATA_DIR": str(settings.root), "TRADEWIND_MODE": settings.mode}
    # a session of its own, so that a signal to this process (a supervisor's SIGTERM, Ctrl-C) is
    # passed on once, as SIGINT: `serve run` then shuts Serve and its local Ray down itself
    child = subprocess.Popen(command, cwd=PROJECT_ROOT, env=environment, start_new_session=True)
    return wait_forwarding_signals(child)


def wait_forwarding_signals(child: subprocess.Popen, grace_s: float = STOP_GRACE_S) -> int:
    """Wait for `child`; SIGINT or SIGTERM to this process asks it to stop with SIGINT (Ctrl-C),
    and it is killed if it has not stopped `grace_s` later. Exit code 0 when stopped on request."""
    stop_deadline: float | None = None

    def forward(signum: int, frame: object) -> None:
        nonlocal stop_deadline
        if stop_deadline is None:
            stop_deadline = time.monotonic() + grace_s
            if child.poll() is None:
                child.send_signal(signal.SIGINT)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        while True:
            try:
                code = child.wait(timeout=0.5)  # short waits: a signal's deadline is checked between them
                break
            except subprocess.TimeoutExpired:
                if stop_deadline is not None and time.monotonic() > stop_deadline:
                    child.kill()
                    code = child.wait()
                    break
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0 if stop_deadline is not None else code
