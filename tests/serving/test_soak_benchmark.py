"""`tradewind benchmark soak` for a few seconds against the serving test world: the report holds
what the issue asks (requests, errors by status, p50/p99 per window, memory of every serving
process at the start and the end). Its figures are not judged here: the soak itself is a benchmark."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tiny_world import ServingWorld

pytestmark = pytest.mark.slow


def test_a_short_soak_reports_windows_errors_and_memory(serving_world: ServingWorld, tmp_path: Path) -> None:
    from benchmarks.soak import main

    out = tmp_path / "soak.json"
    argv = [
        "--url",
        serving_world.url,
        "--data-dir",
        str(serving_world.settings.root),
        "--endpoint",
        "recommend",
        "--api-key",
        serving_world.api_key,
    ]
    argv += ["--minutes", "0.05", "--window-s", "1", "--probe-seconds", "1.5", "--probe-concurrency", "4"]
    assert main([*argv, "--json", str(out)]) == 0

    report = json.loads(out.read_text())
    assert report["max_rps"] > 0
    assert report["target_rps"] == pytest.approx(0.8 * report["max_rps"], rel=0.01)
    # 3 s on the schedule: every request due was sent or counted as skipped
    assert abs(report["requests"] + report["skipped"] - 3.0 * report["target_rps"]) <= 1.5
    assert sum(report["statuses"].values()) == report["requests"]
    # admission control may refuse a burst on a busy machine (503, counted apart); nothing else fails
    assert set(report["errors"]) <= {"503"}, report["errors"]
    windows = report["windows"]
    assert len(windows) >= 2 and sum(window["requests"] for window in windows) == report["requests"]
    assert all(0 < window["p50_ms"] <= window["p99_ms"] for window in windows)
    titles = {process["title"] for process in report["processes"]}
    assert {"gcs_server", "raylet", "ray::ServeController", "ray::ProxyActor"} <= titles, titles
    # the recommender answers inside the ingress replica (configs/serving.yaml: answering: ingress)
    assert any(title.startswith("ray::ServeReplica:tradewind:Ingress") for title in titles), titles
    assert report["memory_start_mb"] > 100 and report["memory_end_mb"] > 100
    assert report["memory_growth_mb"] == pytest.approx(
        report["memory_end_mb"] - report["memory_start_mb"], abs=0.2
    )
