"""`tradewind serve` as a user runs it: a process of its own on the trained world's data folder,
configs/serving.yaml (and serving-haproxy.yaml) as shipped but for its HTTP port, answering on
127.0.0.1 until stopped.

The test sends SIGINT to the `tradewind` pid alone, as a supervisor would (issue 14): the command
passes it on once to its `serve run` child (a session of its own), which shuts Serve and its Ray
down, and exits 0. Then nothing it started is left: every process of both sessions (Ray's GCS,
raylet, dashboard, workers and replicas included) is gone.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from endtoend_world import BIDDER, FORECASTER, RECOMMENDER, TrainedWorld
from polling import wait_until

pytestmark = pytest.mark.slow

# a fresh local Ray with its dashboard, then five replicas loading MLflow models, on 2 busy cores
START_S = 300.0
STOP_S = 90.0  # Serve drains and deletes the applications, then Ray shuts down
# had the raylet died of the signal itself (not by Ray's shutdown), Ray's agents would spend a fixed
# 60 s reporting it to the GCS: a stop that takes that long is a stop done wrong
GONE_S = 45.0
ENDPOINTS = {"recommend": RECOMMENDER, "forecast": FORECASTER, "bid": BIDDER}


def live_processes() -> dict[int, tuple[int, int, str]]:
    """pid -> (parent pid, session id, command) of every live process."""
    found: dict[int, tuple[int, int, str]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # exited while we looked
            continue
        command, _, rest = text.rpartition(")")
        fields = rest.split()  # state, ppid, pgrp, session, ...
        if fields[0] != "Z":
            found[int(stat.parent.name)] = (int(fields[1]), int(fields[3]), command.partition("(")[2])
    return found


def sessions_of_tree(root: int) -> set[int]:
    """The session ids of `root` and every process below it (`tradewind serve` runs `serve run` in
    a session of its own; Ray's actors make process groups of their own but keep their session)."""
    processes = live_processes()
    tree, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, (ppid, _, _) in processes.items() if ppid == parent]
        tree.update(children)
        frontier.extend(children)
    return {processes[pid][1] for pid in tree if pid in processes}


def session_processes(sessions: set[int]) -> dict[int, str]:
    """pid -> command of every live process in one of `sessions`."""
    return {pid: command for pid, (_, session, command) in live_processes().items() if session in sessions}


def wait_for(condition: Callable[[], Any], timeout_s: float, what: str, log: Path) -> Any:
    def output_tail() -> str:
        return "the command's output ends:\n" + log.read_text(errors="replace")[-3000:]

    return wait_until(condition, timeout_s, what, every_s=0.5, explain=output_tail)


@pytest.fixture(params=["serving", "serving-haproxy"])
def serving_config(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Path, int]:
    """configs/serving.yaml (Ray's proxy in front) or serving-haproxy.yaml (HAProxy in front, its
    process in `serve run`'s session too) with a free loopback port instead of 8000, and a keys
    file of the test's own (none yet: the first start makes the embedded key)."""
    from configs import config_path
    from serving.deploy import free_port

    config = yaml.safe_load(config_path(request.param).read_text())
    port = free_port()
    config["http_options"] = {**config["http_options"], "host": "127.0.0.1", "port": port}
    (tradewind,) = [app for app in config["applications"] if app["import_path"] == "serving.app:build_app"]
    tradewind["args"] = {**tradewind["args"], "auth": {"keys_file": str(tmp_path / "api_keys.yaml")}}
    path = tmp_path / "serving.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path, port


@pytest.fixture
def ray_temp_dir() -> Iterator[Path]:
    """A Ray temp folder of the command's own (short: Ray puts unix sockets in it)."""
    import shutil

    folder = Path(tempfile.mkdtemp(prefix="tw-serve-", dir="/tmp"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_tradewind_serve_answers_from_the_champions_and_stops_on_sigint_to_its_pid(
    trained_world: TrainedWorld, serving_config: tuple[Path, int], ray_temp_dir: Path, tmp_path: Path
) -> None:
    from serving.schemas import ForecastRequest
    from tracking.registry import alias_uri, load_served_model
    from tracking.runs import configure_tracking

    config, port = serving_config
    url = f"http://127.0.0.1:{port}"
    environment = {
        key: value
        for key, value in os.environ.items()
        if key
        not in (
            "MLFLOW_TRACKING_URI",
            "MLFLOW_REGISTRY_URI",
            "TRADEWIND_MODE",
            "TRADEWIND_DATA_DIR",
            "TRADEWIND_API_KEYS",
        )
    }
    # a Ray of its own even when `ray start` made a cluster on this host (Ray would join that one)
    environment.update(RAY_ADDRESS="local", RAY_TMPDIR=str(ray_temp_dir))
    command = [
        str(Path(sys.executable).parent / "tradewind"),
        "--data-dir",
        str(trained_world.settings.root),
        "serve",
        "--config",
        str(config),
    ]
    log = tmp_path / "serve.log"
    with log.open("w") as output:
        process = subprocess.Popen(
            command,
            cwd=tmp_path,
            env=environment,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    sessions = {process.pid}
    try:

        def healthy() -> bool:
            assert process.poll() is None, f"exited {process.returncode}:\n{log.read_text()[-3000:]}"
            try:
                return httpx.get(f"{url}/healthz", timeout=2.0).json() == {"status": "ok"}
            except (httpx.HTTPError, ValueError):
                return False

        wait_for(healthy, START_S, f"{url}/healthz", log)
        # the first start printed the embedded key once, and stored only its hash
        printed = [line for line in log.read_text().splitlines() if line.startswith("API key: ")]
        assert len(printed) == 1, log.read_text()[-3000:]
        key = printed[0].removeprefix("API key: ").strip()
        stored = (tmp_path / "api_keys.yaml").read_text()
        assert key not in stored and hashlib.sha256(key.encode()).hexdigest() in stored
        headers = {"Authorization": f"Bearer {key}"}
        assert httpx.get(f"{url}/models", timeout=30.0).status_code == 401

        def all_loaded() -> dict[str, Any] | None:
            status = httpx.get(f"{url}/models", headers=headers, timeout=30.0).json()
            loaded = all("champion" in status.get(endpoint, {}).get("variants", {}) for endpoint in ENDPOINTS)
            return status if loaded else None

        status = wait_for(all_loaded, START_S, "the three champions loaded (GET /models)", log)
        for endpoint, name in ENDPOINTS.items():
            assert status[endpoint]["registered_model"] == name
            assert status[endpoint]["variants"]["champion"]["version"] == trained_world.champions[name]

        configure_tracking(trained_world.settings)
        forecaster = load_served_model(alias_uri(FORECASTER))
        request = forecaster.smoke_request()
        response = httpx.post(f"{url}/forecast", json=request, headers=headers, timeout=60.0)
        assert response.status_code == 200, response.text
        expected = forecaster.answer(ForecastRequest.model_validate(request).model_dump(mode="json"))
        assert response.json()["forecasts"] == expected["forecasts"]
        assert response.json()["model"]["version"] == trained_world.champions[FORECASTER]

        sessions = sessions_of_tree(process.pid)
        assert len(sessions) >= 2, "`serve run` runs in a session of its own"
        front_door = yaml.safe_load(config.read_text())["applications"][0]["args"].get("front_door")
        haproxies = [pid for pid, command in session_processes(sessions).items() if command == "haproxy"]
        assert bool(haproxies) == (front_door == "haproxy"), (front_door, session_processes(sessions))
        os.kill(process.pid, signal.SIGINT)  # to the CLI's own pid, as a supervisor would
        assert process.wait(timeout=STOP_S) == 0, log.read_text()[-3000:]
        deadline = time.monotonic() + GONE_S
        while (left := session_processes(sessions)) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert left == {}, f"still running {GONE_S:.0f} s after `tradewind serve` exited: {left}"
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"{url}/healthz", timeout=2.0)
    finally:
        if process.poll() is None:
            sessions |= sessions_of_tree(process.pid)
        for pid in session_processes(sessions):  # what a failed stop left: ours, by pid
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        process.wait(timeout=30)
