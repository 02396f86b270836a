"""Waiting for something to become true, bounded: the one polling helper of the tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait_until(
    condition: Callable[[], Any],
    timeout_s: float = 30.0,
    what: str = "condition",
    every_s: float = 0.2,
    explain: Callable[[], str] | None = None,
) -> Any:
    """The first truthy value of `condition()`, polled every `every_s` until `timeout_s`; after
    that an AssertionError naming `what` (and `explain()`'s text, such as a log's tail)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every_s)
    detail = f"; {explain()}" if explain is not None else ""
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}{detail}")
