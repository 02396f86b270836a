"""The front door (serving/front_door.py): the environment each one gives a Ray that Tradewind
starts, and a Ray already running with the other one refused. HAProxy serving end to end:
tests/endtoend/test_serve_verb.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from serving.front_door import HAPROXY_SWITCH, front_door_environment, running_front_door

# Ray puts a folder of 56 characters inside the configured one; HAProxy refuses socket paths past 97
RAY_SUBFOLDER = 1 + 56
HAPROXY_SOCKET_PATH_MAX = 97


def test_ray_proxy_switches_haproxy_off() -> None:
    assert front_door_environment("ray-proxy") == {HAPROXY_SWITCH: "0"}


def test_haproxy_gets_direct_ingress_ports_and_short_socket_paths_of_its_own() -> None:
    first, second = front_door_environment("haproxy"), front_door_environment("haproxy")
    assert first[HAPROXY_SWITCH] == "1" and first["RAY_SERVE_ENABLE_DIRECT_INGRESS"] == "1"
    ports = {first["RAY_SERVE_HAPROXY_STATS_PORT"], first["RAY_SERVE_HAPROXY_METRICS_PORT"]}
    assert len(ports) == 2 and all(port.isdigit() for port in ports)
    for socket_key in ("RAY_SERVE_HAPROXY_SOCKET_PATH", "RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH"):
        assert len(first[socket_key]) + RAY_SUBFOLDER <= HAPROXY_SOCKET_PATH_MAX, first[socket_key]
    # two Rays on one machine never share HAProxy's config, sockets or state
    assert first["RAY_SERVE_HAPROXY_SERVER_STATE_BASE"] != second["RAY_SERVE_HAPROXY_SERVER_STATE_BASE"]


def test_a_ray_started_with_the_other_front_door_is_refused(local_serve: Any, tmp_path: Path) -> None:
    from configs.settings import load_settings
    from serving.deploy import start_serving

    assert running_front_door() == "ray-proxy"  # the suite's Ray (tests/conftest.py) starts as shipped
    settings = load_settings().model_copy(update={"data_dir": tmp_path})
    with pytest.raises(ValueError, match=r"front_door 'haproxy', but the Ray already running .* 'ray-proxy'"):
        start_serving(settings, config="serving-haproxy", port=local_serve.port, with_echo=False)
