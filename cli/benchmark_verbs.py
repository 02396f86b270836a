"""`tradewind benchmark WHAT ...`: runs a benchmark module's own `main` (benchmarks/ does the work)."""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer

from configs import InputError

BENCHMARKS = {
    "recommender": "benchmarks.recommender",
    "forecaster": "benchmarks.forecaster",
    "bidder": "benchmarks.bidder",
    "serving": "benchmarks.serving",
    "soak": "benchmarks.soak",
    "overload": "benchmarks.overload",
    "feature-store": "benchmarks.feature_store_bench",
}

# the benchmark's own options (and its --help) pass through to its argparse parser
BENCHMARK_CONTEXT = {"allow_extra_args": True, "ignore_unknown_options": True}


def benchmark(
    ctx: typer.Context,
    what: Annotated[str, typer.Argument(help=", ".join(BENCHMARKS) + ".")],
) -> None:
    """Run a benchmark and print its table; options go to it (`tradewind benchmark recommender --help`)."""
    if what not in BENCHMARKS:
        raise InputError(f"unknown benchmark {what!r} (known: {', '.join(BENCHMARKS)})")
    with argparse_errors_as_input_errors():
        raise typer.Exit(importlib.import_module(BENCHMARKS[what]).main(list(ctx.args)) or 0)


@contextmanager
def argparse_errors_as_input_errors() -> Iterator[None]:
    """A benchmark's argparse error as one InputError line (exit 2), not usage text plus the error:
    its parser is its own (benchmarks/), so its `error` is replaced for the length of the run."""

    def one_line_error(parser: argparse.ArgumentParser, message: str) -> Any:
        raise InputError(f"{parser.prog}: {message} (see {parser.prog} --help)")

    original = argparse.ArgumentParser.error
    argparse.ArgumentParser.error = one_line_error  # type: ignore[method-assign,assignment]
    try:
        yield
    finally:
        argparse.ArgumentParser.error = original  # type: ignore[method-assign]
