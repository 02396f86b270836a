"""Fitting one small model per series, with the way of mapping over series left to the caller.

An executor is any function `executor(function, items) -> list` that applies `function` to every
item and returns the results in order. Three come with it: `serial_map` (in process),
`process_pool_map(workers)` and `ray_map(address)` (Ray tasks, on a local Ray or a cluster; Ray is
imported only when it is used).

Every executor shows a tqdm progress bar over series, on a terminal only (`models.terminal_progress`).
"""

from __future__ import annotations

import contextlib
import multiprocessing
from collections.abc import Callable, Iterator, Sequence
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


@contextlib.contextmanager
def ray_runtime(address: str | None = None, num_cpus: int = 2) -> Iterator[None]:
    """Ray for the block: connect to `address` (a cluster) or start a local Ray of `num_cpus`, unless
    Ray is already up; shut down only what was started here. Wrap a whole backtest in it, so the
    executor's calls (fit, then predict, per fold) share one Ray instead of starting one each."""
    import ray

    started = False
    if not ray.is_initialized():
        options: dict[str, object] = {"include_dashboard": False, "log_to_driver": False}
        options.update({"address": address} if address else {"num_cpus": num_cpus})
        # Ray waits a fixed 30 s for its raylet to register; on an overloaded machine that can pass,
        # so a failed start is tried once more before giving up
        for attempt in range(2):
            try:
                ray.init(**options)
                break
            except Exception:
                ray.shutdown()
                if attempt == 1:
                    raise
        started = True
    try:
        yield
    finally:
        if started:
            ray.shutdown()


def _apply(function: Callable[[Item], Result], item: Item) -> Result:
    return function(item)


def ray_map(address: str | None = None, num_cpus: int = 2) -> Executor:
    """An executor that runs `function` on every item as a Ray task (one CPU each).

    Uses the running Ray if there is one, else starts one for the call (see `ray_runtime`). Results
    come back in item order; the progress bar advances as tasks finish, in whatever order.
    """

    def executor(function: Callable[[Item], Result], items: Sequence[Item]) -> list[Result]:
        import ray

        with ray_runtime(address, num_cpus):
            remote = ray.remote(num_cpus=1)(_apply)
            shared = ray.put(function)  # shipped once, not with every task
            references = [remote.remote(shared, item) for item in items]
            pending = list(references)
            with tqdm(
                total=len(items),
                desc="series (ray)",
                unit="series",
                leave=False,
                disable=not progress_on_terminal(),
            ) as progress:
                while pending:
                    done, pending = ray.wait(pending, num_returns=1)
                    progress.update(len(done))
            return ray.get(references)

    return executor


def fit_many(
    items: Sequence[Item],
    fit_one: Callable[[Item], Result],
    executor: Executor = serial_map,
) -> list[Result]:
    """Fit one model per item (usually one series) through the executor, results in item order."""
    return executor(fit_one, items)
