"""End to end: `tradewind demo --no-serve` run as a user runs it, once; the real families it trained
and registered are then served by the real application (in the session's Serve, and by
`tradewind serve` in a process of its own).

Nothing is imported from this conftest (with several test folders in one run, `conftest` names
whichever folder's was loaded last): the world's code is in `endtoend_world`.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from endtoend_world import Demo, TrainedWorld, champions_of, run_demo


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> Demo:
    """`tradewind demo --no-serve` once per session, on an empty data folder of its own."""
    return run_demo(tmp_path_factory.mktemp("demo") / "data")


@pytest.fixture(scope="session")
def trained_world(demo_run: Demo) -> Iterator[TrainedWorld]:
    """The three champions the demo trained and registered, in its data folder's own MLflow store.
    Tests read it and serve it, and never retrain or move an alias in it (bids reserve budget in
    its pacing store: each test reads the state it starts from)."""
    assert demo_run.returncode == 0, demo_run.output[-3000:]
    with pytest.MonkeyPatch.context() as patch:
        # the data folder's own store, as the CLI finds it: no store from the environment
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        patch.delenv("MLFLOW_REGISTRY_URI", raising=False)
        yield champions_of(demo_run.settings)
