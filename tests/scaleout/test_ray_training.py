"""Training in scale-out mode runs its Ray tasks on the cluster of the platform settings: the
forecaster's Prophet per series on the session's two-node cluster, from a driver started with
TRADEWIND_MODE=scaleout and a platform config whose `scaleout.ray_address` is the cluster's."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from ray_cluster import HEAD_IP, WORKER_IP, RayCluster

from configs import config_path
from configs.settings import load_settings

pytestmark = pytest.mark.scaleout

DRIVER = Path(__file__).with_name("ray_training_driver.py")
DRIVER_SECONDS = 300


def platform_config_for(cluster: RayCluster, folder: Path) -> Path:
    """configs/platform.yaml as it is (mode: embedded) but for the cluster's address."""
    values = yaml.safe_load(config_path("platform").read_text())
    values["scaleout"]["ray_address"] = cluster.address
    path = folder / "platform.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def test_ray_address_follows_the_mode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "platform.yaml"
    path.write_text(yaml.safe_dump({"mode": "embedded", "scaleout": {"ray_address": "10.0.0.1:6379"}}))
    monkeypatch.delenv("TRADEWIND_MODE", raising=False)
    assert load_settings(path).ray_address is None  # embedded: a local Ray per run
    monkeypatch.setenv("TRADEWIND_MODE", "scaleout")
    assert load_settings(path).ray_address == "10.0.0.1:6379"


def test_prophet_per_series_fits_on_both_nodes_in_scaleout_mode(
    two_node_cluster: RayCluster, tmp_path: Path
) -> None:
    platform = platform_config_for(two_node_cluster, tmp_path)
    report = two_node_cluster.driver_report(
        DRIVER, [str(platform)], DRIVER_SECONDS, {"TRADEWIND_MODE": "scaleout"}
    )

    assert report["mode"] == "scaleout"
    assert report["settings_address"] == report["joined"] == two_node_cluster.address
    ips = {node["node_id"]: node["ip"] for node in report["nodes"]}
    assert sorted(ips.values()) == [HEAD_IP, WORKER_IP]
    # 6 series: 6 fit tasks, then 6 forecast tasks, spread over both nodes
    assert len(report["task_nodes"]) == 12
    assert {ips[node] for node in report["task_nodes"]} == {HEAD_IP, WORKER_IP}
    # the cluster's fit is the in-process fit (a deterministic optimisation)
    assert report["rows"] == 6 * 7 and report["same_rows"]
    assert report["largest_mean_difference"] < 1e-6
    assert report["intervals_ordered"]
