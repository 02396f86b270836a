"""A training driver for the cluster test, run as its own process with TRADEWIND_MODE=scaleout
(`python ray_training_driver.py PLATFORM_YAML`): Prophet per series, fitted and forecast as Ray
tasks the way the forecaster's evaluation runs it (`ray_map` inside `ray_runtime`, at the address
the platform settings give), on a few tiny series; then the same fit in process, for comparison.
Prints, as JSON, the settings' address, the cluster the driver joined, its nodes, where each task
ran and the largest difference between the cluster's and the in-process forecasts.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from datetime import date
from functools import partial
from typing import Any

import numpy as np
import polars as pl
import ray

from configs.settings import load_settings
from models.forecasting import ProphetPerSeries, SeriesSpec, serial_map
from models.forecasting.parallel import Executor
from training.forecaster.fit import ray_map, ray_runtime

SERIES = 6
SPEC = SeriesSpec(keys=("product_id", "market_id"), target="quantity")
HORIZON = 7
UNCERTAINTY_SAMPLES = 20


def tiny_series() -> pl.DataFrame:
    rng = np.random.default_rng(0)
    days = pl.date_range(date(2025, 1, 1), date(2025, 3, 31), eager=True)
    weekly = 2 * (np.arange(len(days)) % 7 == 5)
    return pl.concat(
        pl.DataFrame(
            {
                "product_id": f"P{index}",
                "market_id": "US" if index % 2 else "DE",
                "date": days,
                "quantity": rng.poisson(3 + index + weekly).astype(float),
            }
        )
        for index in range(SERIES)
    )


def _with_node(function: Callable[[Any], Any], item: Any) -> tuple[Any, str]:
    return function(item), ray.get_runtime_context().get_node_id()


def recording_nodes(executor: Executor, nodes: list[str]) -> Executor:
    """The executor, noting the node each task ran on."""

    def run(function: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
        results = executor(partial(_with_node, function), items)
        nodes.extend(node for _, node in results)
        return [value for value, _ in results]

    return run


def main(platform_config: str) -> int:
    settings = load_settings(platform_config)
    frame = tiny_series()
    task_nodes: list[str] = []
    with ray_runtime(settings.ray_address):
        joined = ray.get_runtime_context().gcs_address
        alive = [node for node in ray.nodes() if node["Alive"]]
        nodes = [{"node_id": node["NodeID"], "ip": node["NodeManagerAddress"]} for node in alive]
        executor = recording_nodes(ray_map(settings.ray_address), task_nodes)
        on_cluster = (
            ProphetPerSeries(SPEC, executor=executor, uncertainty_samples=UNCERTAINTY_SAMPLES)
            .fit(frame)
            .predict(HORIZON)
        )
    in_process = (
        ProphetPerSeries(SPEC, executor=serial_map, uncertainty_samples=UNCERTAINTY_SAMPLES)
        .fit(frame)
        .predict(HORIZON)
    )
    same_rows = on_cluster.select("product_id", "market_id", "date").equals(
        in_process.select("product_id", "market_id", "date")
    )
    report = {
        "mode": settings.mode,
        "settings_address": settings.ray_address,
        "joined": joined,
        "nodes": nodes,
        # fit then predict: one task per series each
        "task_nodes": task_nodes,
        "rows": on_cluster.height,
        "same_rows": same_rows,
        "largest_mean_difference": float(
            np.max(np.abs(on_cluster["mean"].to_numpy() - in_process["mean"].to_numpy()))
        ),
        "intervals_ordered": bool(
            ((on_cluster["p10"] <= on_cluster["p50"]) & (on_cluster["p50"] <= on_cluster["p90"])).all()
        ),
    }
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
