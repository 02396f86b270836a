"""Fitting one small model per series, with the way of mapping over series left to the caller.

An executor is any function `executor(function, items) -> list` that applies `function` to every
item and returns the results in order. Two come with it: `serial_map` (in process) and
`process_pool_map(workers)`; the Ray one (`training.forecaster.fit.ray_map`) lives in training/, as
models/ imports no Ray.

Every executor shows a tqdm progress bar over series, on a terminal only (`models.terminal_progress`).
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import TypeVar

from tqdm.auto import tqdm

from models.terminal_progress import progress_on_terminal

Item = TypeVar("Item")
Result = TypeVar("Result")
Executor = Callable[[Callable[[Item], Result], Sequence[Item]], list[Result]]


def serial_map(function: Callable[[Item], Result], items: Sequence[Item]) -> list[Result]:
    return [
        function(item)
        for item in tqdm(items, desc="series", unit="series", leave=False, disable=not progress_on_terminal())
    ]


def process_pool_map(workers: int) -> Executor:
    """An executor that maps over a pool of `workers` processes (`function` must be picklable).

    Workers are spawned, not forked: a fork of a process whose polars or OpenMP thread pools have
    run can deadlock in the child.
    """

    def executor(function: Callable[[Item], Result], items: Sequence[Item]) -> list[Result]:
        chunk = max(1, len(items) // (workers * 8))
        with ProcessPoolExecutor(
            max_workers=workers, mp_context=multiprocessing.get_context("spawn")
        ) as pool:
            mapped = pool.map(function, items, chunksize=chunk)
            bar = tqdm(
                mapped,
                total=len(items),
                desc="series",
                unit="series",
                leave=False,
                disable=not progress_on_terminal(),
            )
            return list(bar)

    return executor


def apply_one(function: Callable[[Item], Result], item: Item) -> Result:
    """`function(item)`: what a remote executor ships, importable from here (a Ray worker imports
    this module, not the caller's)."""
    return function(item)


def fit_many(
    items: Sequence[Item],
    fit_one: Callable[[Item], Result],
    executor: Executor = serial_map,
) -> list[Result]:
    """Fit one model per item (usually one series) through the executor, results in item order."""
    return executor(fit_one, items)
