"""Start the serving applications of configs/serving.yaml on a local (or connected) Ray.

`serve run configs/serving.yaml` is the plain Ray way and what `tradewind serve` runs. The tests,
the demo and the benchmark need the same applications inside their own process, for a data
folder of their choosing, on a free loopback port: `start_serving` reads the same config file
(deployment options, user_config) and deploys it with `serve.run`, optionally with a few
user_config keys overridden. It makes a fresh all-scope API key for its caller (`Serving.api_key`,
stored nowhere, handed to the application as a hash), so they need no key set-up.
"""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from configs import validate_config
from configs.families import FAMILY_NAMES
from configs.settings import Settings
from serving.auth import ENV_VARIABLE, ApiKey, add_key, caller_key, ensure_embedded_key, keys_path
from serving.front_door import free_port as free_port  # where the benchmarks and tests take it from
from serving.front_door import front_door_environment, running_front_door
from serving.settings import (
    INGRESS,
    MODEL_DEPLOYMENTS,
    SERVING_CONFIG,
    AppArgs,
    application,
    load_serving_config,
)

TRADEWIND_IMPORT = "serving.app:build_app"
ECHO_IMPORT = "serving.app:build_echo"
# how long `tradewind serve` lets `serve run` shut Serve and Ray down after a stop signal
STOP_GRACE_S = 60.0


@dataclass(frozen=True)
class Serving:
    url: str  # http://127.0.0.1:<port>
    config: dict[str, Any]
    api_key: str  # an all-scope key of the caller's own (named `start_serving`)

    @property
    def headers(self) -> dict[str, str]:
        """What every request but /healthz sends."""
        return {"Authorization": f"Bearer {self.api_key}"}


def deployment_options(
    entry: dict[str, Any], user_config: dict[str, Any] | None = None
) -> dict[str, dict[str, Any]]:
    """`.options()` per deployment name from an application entry; `user_config` keys are merged
    into every model endpoint's user_config (tests poll faster, for example): a model deployment's,
    or with answering: ingress each family section of the Ingress's."""
    options: dict[str, dict[str, Any]] = {}
    in_ingress = (entry.get("args") or {}).get("answering", "ingress") == "ingress"
    for deployment in entry.get("deployments") or []:
        values = copy.deepcopy({key: value for key, value in deployment.items() if key != "name"})
        if user_config and deployment["name"] in MODEL_DEPLOYMENTS.values():
            values["user_config"] = {**(values.get("user_config") or {}), **user_config}
        if user_config and in_ingress and deployment["name"] == INGRESS:
            sections = values.get("user_config") or {}
            values["user_config"] = {
                name: {**(sections.get(name) or {}), **user_config} for name in FAMILY_NAMES
            }
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
    api_keys: Sequence[ApiKey] = (),
) -> Serving:
    """Deploy the tradewind application (and the bare echo) on 127.0.0.1 and wait until ready.

    `options` replace deployment options of the config per deployment name (e.g. a fixed number
    of replicas instead of autoscaling). `metrics_port` is where Ray exports Prometheus metrics
    (Ray Serve's own and Tradewind's) when this call starts Ray. `app_name` and `route_prefix`
    deploy the tradewind application beside others in a Serve instance already running (on
    `port`): the returned url then ends with the prefix. The application accepts the keys of its
    keys file and TRADEWIND_API_KEYS, `api_keys` (stored forms, e.g. `auth.caller_key(name, scopes)`)
    and a fresh all-scope key made here for the caller (`Serving.api_key`)."""
    import ray
    from ray import serve

    from serving.app import Echo, tradewind_app

    serve_config = load_serving_config(config)
    tradewind = application(serve_config, TRADEWIND_IMPORT)
    app_args = tradewind_args(serve_config, config)
    front_door = app_args.front_door
    if not ray.is_initialized():
        os.environ.update(front_door_environment(front_door))  # Ray's processes read it as they start
        extra = {"_metrics_export_port": metrics_port} if metrics_port else {}
        ray.init(
            num_cpus=num_cpus, include_dashboard=False, configure_logging=False, log_to_driver=False, **extra
        )
    elif running_front_door() != front_door:
        raise ValueError(
            f"{config}: front_door {front_door!r}, but the Ray already running here was started with "
            f"{running_front_door()!r}: the front door is chosen when Ray starts"
        )
    port = port or free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    chosen = deployment_options(tradewind, user_config)
    for name, replaced in (options or {}).items():
        chosen[name] = {**chosen.get(name, {}), **replaced}
    prefix = route_prefix or tradewind.get("route_prefix", "/")
    key, stored = caller_key("start_serving")  # the caller's own: tests and benchmarks need no set-up
    serve.run(
        tradewind_app(
            settings,
            chosen,
            registered_models,
            app_args.answering,
            auth=app_args.auth,
            extra_keys=[stored, *api_keys],
        ),
        name=app_name or tradewind["name"],
        route_prefix=prefix,
    )
    if with_echo:
        echo = application(serve_config, ECHO_IMPORT)
        echo_options = deployment_options(echo).get("Echo", {})
        serve.run(Echo.options(**echo_options).bind(), name=echo["name"], route_prefix=echo["route_prefix"])
    url = f"http://127.0.0.1:{port}{prefix.rstrip('/')}"
    _wait_for_http(url)
    return Serving(url, serve_config, key)


def tradewind_args(serve_config: dict[str, Any], config: str | Path = SERVING_CONFIG) -> AppArgs:
    """The tradewind application's `args` in a Serve config, validated."""
    tradewind = application(serve_config, TRADEWIND_IMPORT)
    return validate_config(tradewind.get("args") or {}, AppArgs, f"{config}: tradewind args")


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


def _keys_file(settings: Settings, config: str) -> Path:
    """The keys file the tradewind application of `config` reads for `settings`."""
    app_args = tradewind_args(load_serving_config(config), config)
    return keys_path(app_args.auth, Path(app_args.data_dir) if app_args.data_dir else settings.root)


def new_named_key(settings: Settings, config: str, name: str, scopes: list[str]) -> tuple[str, Path]:
    """`tradewind serve --add-key NAME --scopes ...`: (the new key, the keys file holding its hash).
    Running applications read the keys file when they start."""
    path = _keys_file(settings, config)
    return add_key(path, name, scopes), path


def first_start_key(settings: Settings, config: str = SERVING_CONFIG) -> tuple[str, Path] | None:
    """`tradewind serve`'s first start in embedded mode with no keys file and no TRADEWIND_API_KEYS:
    an all-scope key named `embedded`, its hash stored in the keys file; (the key, where its hash
    is). None otherwise: the key exists already (and is never shown again), or keys come from the
    environment, or a cluster's keys are its operator's business."""
    if settings.mode != "embedded" or os.environ.get(ENV_VARIABLE, "").strip():
        return None
    path = _keys_file(settings, config)
    key = ensure_embedded_key(path)
    return (key, path) if key is not None else None


def serve_run(settings: Settings, config: str = SERVING_CONFIG) -> int:
    """`serve run <config>` (Ray's own CLI) for these settings, in the foreground; its exit code.

    The config is validated first, so a wrong key fails with one line naming file and key. The
    data folder reaches the application builder through TRADEWIND_DATA_DIR; in scale-out mode
    Ray's address comes from the platform settings."""
    import sys

    from configs import PROJECT_ROOT, config_path

    serve_config = load_serving_config(config)
    command = [str(Path(sys.executable).parent / "serve"), "run", str(config_path(config))]
    if settings.ray_address:
        command[2:2] = ["--address", settings.ray_address]
    environment = {**os.environ, "TRADEWIND_DATA_DIR": str(settings.root), "TRADEWIND_MODE": settings.mode}
    if not settings.ray_address:  # `serve run` starts its own Ray: it gets the config's front door
        environment.update(front_door_environment(tradewind_args(serve_config, config).front_door))
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
