"""`tradewind serve` as a user runs it: a process of its own on the trained world's data folder,
configs/serving.yaml as shipped but for its HTTP port, answering on 127.0.0.1 until Ctrl-C.

Ctrl-C in a terminal signals the whole foreground process group, so the test sends SIGINT to the
group (issue 14: a SIGINT to the `tradewind` pid alone stops only its `serve run` child). The
command then exits, and the test checks that nothing it started is left: every process of its
session (Ray's GCS, raylet, dashboard, workers and replicas included) is gone. When the SIGINT kills
the raylet before Ray's own shutdown does, Ray's dashboard and runtime-env agents outlive the command
by about a minute (GONE_S).
"""

from __future__ import annotations

import contextlib
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

pytestmark = pytest.mark.slow

# a fresh local Ray with its dashboard, then five replicas loading MLflow models, on 2 busy cores
START_S = 300.0
STOP_S = 90.0  # Serve drains and deletes the applications, then Ray shuts down
# after Ctrl-C the raylet dies of the SIGINT rather than by Ray's shutdown: its dashboard and
# runtime-env agents then spend Ray's fixed 60 s trying to report that to the GCS (gone too)
GONE_S = 120.0
ENDPOINTS = {"recommend": RECOMMENDER, "forecast": FORECASTER, "bid": BIDDER}


def session_processes(session: int) -> dict[int, str]:
    """pid -> command of every live process in the session `session` (Ray's actors make process
    groups of their own, but stay in the session of the command that started Ray)."""
    found: dict[int, str] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # exited while we looked
            continue
        command, _, rest = text.rpartition(")")
        fields = rest.split()  # state, ppid, pgrp, session, ...
        if int(fields[3]) == session and fields[0] != "Z":
            found[int(stat.parent.name)] = command.partition("(")[2]
    return found


def wait_for(condition: Callable[[], Any], timeout_s: float, what: str, log: Path) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.5)
    tail = log.read_text(errors="replace")[-3000:]
    raise AssertionError(
        f"timed out after {timeout_s:.0f} s waiting for {what}; the command's output ends:\n{tail}"
    )


@pytest.fixture
def serving_config(tmp_path: Path) -> tuple[Path, int]:
    """configs/serving.yaml with a free loopback port instead of 8000."""
    from configs import config_path
    from serving.deploy import free_port

    config = yaml.safe_load(config_path("serving").read_text())
    port = free_port()
    config["http_options"] = {**config["http_options"], "host": "127.0.0.1", "port": port}
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


def test_tradewind_serve_answers_from_the_champions_and_stops_on_ctrl_c(
    trained_world: TrainedWorld, serving_config: tuple[Path, int], ray_temp_dir: Path, tmp_path: Path
) -> None:
    from serving.schemas import ForecastRequest
    from training.registry import load_by_alias
    from training.tracking import configure_tracking

    config, port = serving_config
    url = f"http://127.0.0.1:{port}"
    environment = {
        key: value
        for key, value in os.environ.items()
        if key not in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "TRADEWIND_MODE", "TRADEWIND_DATA_DIR")
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
    try:

        def healthy() -> bool:
            assert process.poll() is None, f"exited {process.returncode}:\n{log.read_text()[-3000:]}"
            try:
                return httpx.get(f"{url}/healthz", timeout=2.0).json() == {"status": "ok"}
            except (httpx.HTTPError, ValueError):
                return False

        wait_for(healthy, START_S, f"{url}/healthz", log)

        def all_loaded() -> dict[str, Any] | None:
            status = httpx.get(f"{url}/models", timeout=30.0).json()
            loaded = all("champion" in status.get(endpoint, {}).get("variants", {}) for endpoint in ENDPOINTS)
            return status if loaded else None

        status = wait_for(all_loaded, START_S, "the three champions loaded (GET /models)", log)
        for endpoint, name in ENDPOINTS.items():
            assert status[endpoint]["registered_model"] == name
            assert status[endpoint]["variants"]["champion"]["version"] == trained_world.champions[name]

        configure_tracking(trained_world.settings)
        forecaster = load_by_alias(FORECASTER).unwrap_python_model()
        request = forecaster.smoke_request()
        response = httpx.post(f"{url}/forecast", json=request, timeout=60.0)
        assert response.status_code == 200, response.text
        expected = forecaster.answer(ForecastRequest.model_validate(request).model_dump(mode="json"))
        assert response.json()["forecasts"] == expected["forecasts"]
        assert response.json()["model"]["version"] == trained_world.champions[FORECASTER]

        os.killpg(process.pid, signal.SIGINT)  # Ctrl-C in the terminal
        assert process.wait(timeout=STOP_S) == 0, log.read_text()[-3000:]
        deadline = time.monotonic() + GONE_S
        while (left := session_processes(process.pid)) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert left == {}, f"still running {GONE_S:.0f} s after `tradewind serve` exited: {left}"
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"{url}/healthz", timeout=2.0)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
        for pid in session_processes(process.pid):  # what a failed stop left: ours, by pid
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
